"""Fixtures for the integration tier: real replica and worker processes on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pipeorch.local.cluster import LOOPBACK_TIMING, LocalCluster, wait_until
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings, RaftTiming
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

from ..conftest import failed


@pytest.fixture
def cluster(tmp_path, request) -> Iterator[LocalCluster]:
    """A fresh 3-replica control plane. On teardown, every live replica must hold the same
    state (equal digests at an equal revision) and none may have truncated an applied entry."""
    c = LocalCluster(tmp_path / "cluster")
    with c.logs_on_failure():
        c.start()
        yield c
        if failed(request):
            c.dump_logs()
        assert_replicas_agree(c)
    c.stop()


def assert_replicas_agree(c: LocalCluster) -> None:
    if len(c.live()) < 2:
        return
    c.wait_for_leader()
    views = c.wait_converged()
    digests = {node_id: v["digest"] for node_id, v in views.items()}
    assert len(set(digests.values())) == 1, f"replica state diverged: {digests}"
    truncations = {node_id: v["applied_truncations"] for node_id, v in views.items()}
    assert set(truncations.values()) == {0}, f"applied entries truncated: {truncations}"


@pytest.fixture
def stubs(cluster: LocalCluster) -> Iterator[dict[str, pb_grpc.WorkerServiceStub]]:
    channels = {n: grpc.insecure_channel(r.grpc) for n, r in cluster.replicas.items()}
    yield {n: pb_grpc.WorkerServiceStub(ch) for n, ch in channels.items()}
    for channel in channels.values():
        channel.close()


@pytest.fixture
def control(cluster: LocalCluster) -> Iterator[dict[str, pb_grpc.ControlServiceStub]]:
    channels = {n: grpc.insecure_channel(r.grpc) for n, r in cluster.replicas.items()}
    yield {n: pb_grpc.ControlServiceStub(ch) for n, ch in channels.items()}
    for channel in channels.values():
        channel.close()


def workers_seen_by(c: LocalCluster, node_id: str) -> dict[str, str]:
    """worker id -> status, as replica ``node_id`` has applied them."""
    regions = c.get(node_id, "/cluster")["regions"]
    return {
        w["worker_id"]: status
        for by_status in regions.values()
        for status, workers in by_status.items()
        for w in workers
    }


def wait_worker_status(c: LocalCluster, node_id: str, worker_id: str, status: str, timeout=15.0):
    return wait_until(
        lambda: workers_seen_by(c, node_id).get(worker_id) == status,
        timeout,
        what=f"{worker_id} {status} on {node_id}",
    )


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def noop_manifest(name: str, steps: list[str]) -> str:
    """A pipeline of independent steps that run ``steps:noop``, as JSON."""
    return json.dumps(
        {
            "apiVersion": "pipeorch.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name},
            "spec": {"steps": [{"name": s, "run": "steps:noop"} for s in steps]},
        }
    )


def raft_node(
    members: dict[str, str],
    node_id: str,
    data: Path,
    loop: asyncio.AbstractEventLoop | None = None,
    **settings: Any,
) -> RaftNode:
    """One member at loopback timing, its data under ``data/node_id``; ``settings`` are more
    ControlPlaneSettings fields (a password)."""
    return RaftNode(
        ControlPlaneSettings(
            node_id=node_id,
            members=members,
            data_dir=data / node_id,
            raft=RaftTiming(**LOOPBACK_TIMING),
            **settings,
        ),
        loop=loop,
    )
