"""The operator against the real API server: local replicas (the leader runs kopf), workers and
MinIO as processes, driven with kubectl. Every wait is on a condition, never on a time."""

from __future__ import annotations

import json
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.local.k8s import KwokCluster
from pipeorch.local.up import workers_online

from ..integration.conftest import assert_replicas_agree
from .conftest import ROOT, get_json, table

EXAMPLES = ROOT / "examples"


class Operated:
    """A LocalCluster whose replicas run the operator in one namespace of the test cluster."""

    def __init__(self, k8s: KwokCluster, cluster: LocalCluster, namespace: str) -> None:
        self.k8s, self.cluster, self.ns = k8s, cluster, namespace

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.k8s.kubectl(*args, "-n", self.ns)

    def apply(self, manifest: str) -> None:
        self.k8s.apply(manifest, "-n", self.ns)

    def get(self, *args: str) -> Any:
        return get_json(self.k8s, *args, "-n", self.ns)

    def tasks(self, pipeline: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            "tasks.pipeorch.dev", "-l", f"pipeorch.dev/pipeline={pipeline}"
        )["items"]
        return items

    def wait_task_running(self, pipeline: str, timeout: float = 60) -> None:
        def running() -> bool:
            phases = [t.get("status", {}).get("phase") for t in self.tasks(pipeline)]
            return "Running" in phases

        wait_until(running, timeout, interval=0.1, what=f"a task of {pipeline} running")

    def phase(self, kind: str, name: str) -> str | None:
        return self.get(kind, name).get("status", {}).get("phase")

    def wait_phase(self, kind: str, name: str, phases: set[str], timeout: float = 90) -> str:
        return wait_until(
            lambda: p if (p := self.phase(kind, name)) in phases else None,
            timeout,
            interval=0.1,
            what=f"{kind}/{name} in {sorted(phases)}",
        )

    def run(self, name: str) -> dict[str, Any]:
        """The pipeline as the replicated state has it (any replica answers)."""
        node = self.cluster.wait_for_leader()
        result: dict[str, Any] = self.cluster.get(node, f"/pipelines/{name}")
        return result


@pytest.fixture(scope="module")
def operated(crds: KwokCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operated]:
    """The module's system; on teardown, every live replica must hold the same state and none
    may have truncated an applied entry."""
    namespace = f"op-{secrets.token_hex(4)}"
    crds.kubectl("create", "namespace", namespace)
    cluster = LocalCluster(
        tmp_path_factory.mktemp("operated"),
        regions=["aws", "gcp", "azure"],
        store_region="aws",
        code_path=[EXAMPLES],
        kubeconfig=crds.kubeconfig,
        watch_namespace=namespace,
    )
    try:
        with cluster.logs_on_failure():
            cluster.start()
            for region in ("aws", "gcp", "azure"):
                cluster.add_worker(region, worker_id=f"{region}-w1", heartbeat=0.3, slots=2)
            wait_until(lambda: workers_online(cluster, 3), 30, what="workers online")
            yield Operated(crds, cluster, namespace)
            assert_replicas_agree(cluster)
    finally:
        cluster.stop()
        crds.kubectl("delete", "namespace", namespace, "--wait=false")


def sleepy(name: str, steps: int, seconds: float = 1.0) -> str:
    """A chain of steps that each sleep: long enough to act while it runs."""
    body = [
        {
            "name": f"s{i}",
            "command": ["sleep", str(seconds)],
            **({"dependsOn": [f"s{i - 1}"]} if i else {}),
        }
        for i in range(steps)
    ]
    return json.dumps(
        {
            "apiVersion": "pipeorch.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name},
            "spec": {"steps": body},
        }
    )


def test_the_energy_example_runs_from_kubectl(operated: Operated) -> None:
    operated.apply((EXAMPLES / "energy-pipeline.yaml").read_text())
    operated.kubectl(
        "wait", "--for=condition=Succeeded", "pipeline/energy-report", "--timeout=120s"
    )
    rows = table(operated.k8s, "tasks.pipeorch.dev", "-n", operated.ns)
    assert {r["STEP"] for r in rows} == {"generate", "analyze", "report"}
    for row in rows:
        assert row["NAME"] == f"energy-report-{row['STEP']}"
        assert row["PHASE"] == "Succeeded", row
        assert row["REGION"] in {"aws", "gcp", "azure"}, row
        assert row["WORKER"] == f"{row['REGION']}-w1", row
        assert row["ATTEMPT"] == "1", row
    pipeline = operated.get("pipeline", "energy-report")
    assert pipeline["status"]["progress"] == "3/3"
    task = operated.get("tasks.pipeorch.dev", "energy-report-report")
    owner = task["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Pipeline", pipeline["metadata"]["uid"])
    assert {o["name"] for o in task["status"]["outputs"]} == {"energy_report.csv", "report.md"}


def test_a_cycle_ends_invalid_naming_the_field(operated: Operated) -> None:
    operated.apply(
        textwrap.dedent(
            """\
            apiVersion: pipeorch.dev/v1alpha1
            kind: Pipeline
            metadata: {name: loop}
            spec:
              steps:
                - {name: a, run: "m:f", dependsOn: [b]}
                - {name: b, run: "m:f", dependsOn: [a]}
            """
        )
    )
    operated.wait_phase("pipeline", "loop", {"Invalid"})
    status = operated.get("pipeline", "loop")["status"]
    assert "spec.steps[0].dependsOn: cycle" in status["message"]
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Succeeded",
        "False",
        "Invalid",
    )
    assert operated.tasks("loop") == []


def test_a_deleted_pipeline_takes_its_tasks_and_work_with_it(operated: Operated) -> None:
    operated.apply(sleepy("doomed", steps=3, seconds=2))
    operated.wait_task_running("doomed")
    operated.kubectl("delete", "pipeline", "doomed", "--wait=false")
    wait_until(lambda: operated.tasks("doomed") == [], 60, what="doomed's Tasks collected")
    wait_until(lambda: operated.run("doomed")["phase"] == "Cancelled", 30, what="doomed cancelled")


def test_a_pipeline_deleted_and_applied_again_runs_again(operated: Operated) -> None:
    manifest = sleepy("again", steps=2, seconds=0.2)
    operated.apply(manifest)
    operated.wait_phase("pipeline", "again", {"Succeeded"})
    first = operated.get("pipeline", "again")["metadata"]["uid"]
    operated.kubectl("delete", "pipeline", "again", "--wait=false")
    operated.apply(manifest)  # at once: the old Tasks may still be awaiting collection
    second = operated.get("pipeline", "again")["metadata"]["uid"]
    assert second != first
    operated.wait_phase("pipeline", "again", {"Succeeded"})
    assert operated.run("again")["submissionKey"] == second

    def owned_by_second() -> bool:
        tasks = operated.tasks("again")
        owners = {t["metadata"]["ownerReferences"][0]["uid"] for t in tasks}
        return len(tasks) == 2 and owners == {second}

    wait_until(owned_by_second, 60, what="again's Tasks owned by the new Pipeline")


def test_a_cloudregion_gets_workers_on_its_nodes_and_the_latency_map(operated: Operated) -> None:
    operated.apply((EXAMPLES / "regions.yaml").read_text())

    def pods_placed() -> list[dict[str, Any]] | None:
        pods = operated.get("pods", "-l", "pipeorch.dev/region=aws")["items"]
        placed = [p for p in pods if p["spec"].get("nodeName")]
        return placed if len(placed) == 2 else None

    for pod in wait_until(pods_placed, 60, interval=0.2, what="aws worker pods scheduled"):
        assert pod["spec"]["nodeName"] == "kwok-aws-0"
    deployment = operated.get("deployment", "pipeorch-worker-aws")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "CloudRegion"
    latency = json.loads(operated.get("configmap", "pipeorch-latency")["data"]["latency.json"])
    rtts = {(link["a"], link["b"]): link["rttMs"] for link in latency["links"]}
    assert rtts == {("aws", "gcp"): 50, ("aws", "azure"): 75, ("azure", "gcp"): 125}
    # An edited CloudRegion edits its Deployment.
    operated.kubectl(
        "patch", "cloudregion", "azure", "--type=merge", "-p", '{"spec":{"workers":{"replicas":3}}}'
    )
    wait_until(
        lambda: operated.get("deployment", "pipeorch-worker-azure")["spec"]["replicas"] == 3,
        30,
        what="azure's Deployment scaled to 3",
    )
    # readyWorkers counts the workers registered online in the region (one local process).
    wait_until(
        lambda: operated.get("cloudregion", "gcp").get("status", {}).get("readyWorkers") == 1,
        30,
        what="gcp readyWorkers",
    )


def test_the_operator_follows_the_raft_leader(operated: Operated) -> None:
    cluster = operated.cluster
    operated.apply(sleepy("failover", steps=4, seconds=1))
    operated.wait_task_running("failover")
    old = cluster.wait_for_leader()
    cluster.kill_replica(old)
    try:
        operated.wait_phase("pipeline", "failover", {"Succeeded"}, timeout=120)
        tasks = operated.tasks("failover")
        assert sorted(t["metadata"]["name"] for t in tasks) == [f"failover-s{i}" for i in range(4)]
        assert all(t["status"]["phase"] == "Succeeded" for t in tasks)
        assert all(t["status"]["attempt"] == 1 for t in tasks), [t["status"] for t in tasks]
    finally:
        cluster.replicas[old].start()
    cluster.wait_for_leader()


def test_a_restarted_control_plane_readopts_everything(operated: Operated) -> None:
    cluster = operated.cluster
    before = {t["metadata"]["name"]: t["metadata"]["uid"] for t in operated.tasks("energy-report")}
    operated.apply(sleepy("orphan", steps=3, seconds=2))
    operated.wait_task_running("orphan")
    for replica in cluster.replicas.values():
        replica.kill()
    # Deleted while no operator runs: no event will ever tell of it.
    operated.kubectl("delete", "pipeline", "orphan", "--wait=false")
    for replica in cluster.replicas.values():
        replica.start()
    cluster.wait_for_leader()
    operated.apply(sleepy("after-restart", steps=2, seconds=0.2))
    operated.wait_phase("pipeline", "after-restart", {"Succeeded"})
    after = {t["metadata"]["name"]: t["metadata"]["uid"] for t in operated.tasks("energy-report")}
    assert after == before, "the same Task objects, none added"
    assert operated.phase("pipeline", "energy-report") == "Succeeded"
    names = [t["metadata"]["name"] for t in operated.get("tasks.pipeorch.dev")["items"]]
    assert len(names) == len(set(names))
    wait_until(
        lambda: operated.run("orphan")["phase"] == "Cancelled", 30, what="orphan's run cancelled"
    )
