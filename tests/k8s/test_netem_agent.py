"""The netem agent on the real API server: it reads the real node list and latency ConfigMap,
and loads its rules into the real kernel (a network namespace standing for the node; a plain
leaf in place of netem, which this kernel lacks)."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from functools import partial

import pytest
from kubernetes import client, config

from pipeorch.local.cluster import wait_until
from pipeorch.local.k8s import KwokCluster, node_ip
from pipeorch.netem import rules
from pipeorch.netem.agent import NetemAgent, run_tc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pipeorch-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (
            ["ip", "link", "add", "node0", "type", "veth", "peer", "name", "peer0"],
            ["ip", "link", "set", "node0", "up"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def tc_show(netns: str, *what: str) -> str:
    argv = ["ip", "netns", "exec", netns, "tc", *what, "show", "dev", "node0"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def configmap(matrix: dict[str, dict[str, float]]) -> dict[str, object]:
    data = rules.latency_data(matrix, {"aws": 5.0, "gcp": 5.0, "azure": 5.0})
    return {"metadata": {"name": "pipeorch-latency"}, "data": {rules.CONFIGMAP_KEY: data}}


def hex_ip(ip: str) -> str:
    return "".join(f"{int(part):02x}" for part in ip.split("."))


def test_the_agent_keeps_the_node_s_rules_equal_to_the_configmap(
    k8s: KwokCluster, namespace, netns
):
    api = client.CoreV1Api(config.new_client_from_config(str(k8s.kubeconfig)))
    api.create_namespaced_config_map(namespace, configmap({"aws": {"gcp": 50, "azure": 75}}))
    agent = NetemAgent(
        api, "kwok-aws-0", namespace, "pipeorch-latency", "node0", leaf="pfifo",
        apply=partial(run_tc, netns=netns),
    )  # fmt: skip
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop, 0.2))
    runner.start()
    try:
        gcp, azure = hex_ip(node_ip("gcp")), hex_ip(node_ip("azure"))
        wait_until(lambda: gcp in tc_show(netns, "filter"), 30, what="rules applied")
        assert azure in tc_show(netns, "filter")
        assert agent.applied is not None
        assert sum("pfifo" in line for line in agent.applied) == 2  # gcp and azure, not aws

        # The matrix loses azure: the agent notices and rebuilds without it.
        api.replace_namespaced_config_map(
            "pipeorch-latency", namespace, configmap({"aws": {"gcp": 80}})
        )
        wait_until(lambda: azure not in tc_show(netns, "filter"), 30, what="rules rebuilt")
        assert gcp in tc_show(netns, "filter")
    finally:
        stop.set()
        runner.join(10)
    assert "htb" not in tc_show(netns, "qdisc")  # removed on exit
