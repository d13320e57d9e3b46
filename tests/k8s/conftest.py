"""Fixtures for the k8s tier: one real control plane (etcd, kube-apiserver, controller manager,
scheduler) with KWOK nodes in three region pools, shared by the whole session."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeorch.local.k8s import KwokCluster

ROOT = Path(__file__).resolve().parents[2]
_timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KwokCluster]:
    cluster = KwokCluster(tmp_path_factory.mktemp("k8s"), name=f"pipeorch-test-{os.getpid()}")
    _timings["cluster start"] = cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not any(cluster.pids()), "processes left after stop"


@pytest.fixture(scope="session")
def crds(k8s: KwokCluster) -> KwokCluster:
    """The cluster with the committed CRDs of crds/ installed and Established."""
    k8s.install_crds(ROOT / "crds")
    return k8s


@pytest.fixture
def namespace(crds: KwokCluster) -> Iterator[str]:
    """A namespace of the test's own, so tests share the cluster and not their objects."""
    name = f"t-{secrets.token_hex(4)}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false")


def get_json(cluster: KwokCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def table(cluster: KwokCluster, *args: str) -> list[dict[str, str]]:
    """``kubectl get`` as kubectl prints it, one dict per row keyed by the header's columns.
    kubectl aligns every cell under its header, so a row is cut where the header's cells
    start; a column with nothing in it comes out as ``""``."""
    header, *rows = cluster.kubectl("get", *args).stdout.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 2 : i] == "  ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [{n: row[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for row in rows]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for what, seconds in _timings.items():
        terminalreporter.write_line(f"k8s tier: {what} {seconds:.1f}s")
