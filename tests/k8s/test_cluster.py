"""The test cluster itself: region pools of KWOK nodes, the real scheduler placing pods on
them, and clusters that run side by side and leave nothing behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pipeorch.local.k8s import REGIONS, KwokCluster

from .conftest import get_json


def test_each_region_pool_has_a_ready_labelled_node(k8s: KwokCluster) -> None:
    for region in REGIONS:
        nodes = get_json(k8s, "nodes", "-l", f"pipeorch.dev/region={region}")["items"]
        assert [n["metadata"]["name"] for n in nodes] == [f"kwok-{region}-0"]
        labels = nodes[0]["metadata"]["labels"]
        assert labels["topology.kubernetes.io/region"] == region
        ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"]
        assert ready == "True"


def deployment(name: str, region: str, replicas: int) -> str:
    labels = {"app": name}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"pipeorch.dev/region": region},
                        "containers": [{"name": "worker", "image": "pipeorch-worker:test"}],
                    },
                },
            },
        }
    )


def test_the_scheduler_puts_a_region_pinned_deployment_on_its_pool(
    k8s: KwokCluster, namespace: str
) -> None:
    k8s.apply(deployment("gcp-workers", "gcp", replicas=3), "-n", namespace)
    k8s.kubectl("rollout", "status", "deployment/gcp-workers", "-n", namespace, "--timeout=60s")
    pods = get_json(k8s, "pods", "-n", namespace, "-l", "app=gcp-workers")["items"]
    assert len(pods) == 3
    assert {p["spec"]["nodeName"] for p in pods} == {"kwok-gcp-0"}
    # KWOK plays the kubelet: no container runs, yet the pod reports Running.
    assert {p["status"]["phase"] for p in pods} == {"Running"}


def test_a_second_cluster_runs_beside_and_stops_clean(k8s: KwokCluster, tmp_path: Path) -> None:
    other = KwokCluster(tmp_path / "other", name="pipeorch-other", regions=("aws",))
    try:
        other.start()
        assert set(other.ports()).isdisjoint(k8s.ports())
        assert get_json(other, "nodes")["items"][0]["metadata"]["name"] == "kwok-aws-0"
        assert len(get_json(k8s, "nodes")["items"]) == len(REGIONS)
        pids, ports = other.pids(), other.ports()
        assert len(pids) == 5, "etcd, apiserver, controller manager, scheduler, kwok"
    finally:
        other.stop()
    assert not other.running()
    for pid in pids:
        assert not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid), f"pid {pid} left"
    for port in ports:
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
    k8s.kubectl("get", "--raw", "/readyz")  # the first one never noticed


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
