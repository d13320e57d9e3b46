"""The pure parts of the test cluster: its kwokctl configuration, its nodes, and the reading of
the API server's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeorch.local.k8s import PORTS, kwokctl_config, node_manifest, parse_rejection


def test_config_pins_every_binary_and_port_on_loopback() -> None:
    ports = list(range(20001, 20001 + len(PORTS)))
    options = kwokctl_config(ports, binary=lambda name: Path("/pinned") / name)["options"]
    assert options["runtime"] == "binary"
    assert options["bindAddress"] == "127.0.0.1"
    assert [options[key] for key in PORTS] == ports
    binaries = {k: v for k, v in options.items() if k.endswith("Binary")}
    # Every component kwokctl starts; one left out would be fetched from the internet.
    assert set(binaries) == {
        "etcdBinary",
        "kubeApiserverBinary",
        "kubeControllerManagerBinary",
        "kubeSchedulerBinary",
        "kwokControllerBinary",
        "kubectlBinary",
    }
    assert all(v.startswith("/pinned/") for v in binaries.values())


def test_a_node_of_a_region_pool() -> None:
    node = node_manifest("gcp", 2)
    assert node["metadata"]["name"] == "kwok-gcp-2"
    assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == "gcp"
    assert node["metadata"]["labels"]["pipeorch.dev/region"] == "gcp"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["spec"]["providerID"] == "kwok://kwok-gcp-2"
    assert node["status"]["allocatable"]["pods"] == "110"


REJECTIONS = [
    (
        'The Pipeline "bad" is invalid: spec.steps[0]: Invalid value: exactly one of `run` or '
        "`command` must be set\n",
        "spec.steps[0]",
        "Invalid value: exactly one of `run` or `command` must be set",
    ),
    (
        'The Pipeline "bad" is invalid: \n* spec.placement: Unsupported value: "nearest"\n'
        "* <nil>: Invalid value: null: some validation rules were not checked\n",
        "spec.placement",
        'Unsupported value: "nearest"',
    ),
    (
        'Error from server (BadRequest): error when creating "STDIN": Pipeline in version '
        '"v1alpha1" cannot be handled as a Pipeline: strict decoding error: unknown field '
        '"spec.steps[0].colour"\n',
        "spec.steps[0].colour",
        "unknown field",
    ),
]


@pytest.mark.parametrize(("stderr", "field", "problem"), REJECTIONS)
def test_a_refusal_names_its_field(stderr: str, field: str, problem: str) -> None:
    error = parse_rejection(stderr)
    assert error is not None
    assert (error.field, error.problem) == (field, problem)


def test_other_failures_are_not_refusals() -> None:
    assert parse_rejection("Unable to connect to the server: connection refused") is None
