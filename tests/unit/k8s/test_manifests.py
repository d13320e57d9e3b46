"""The operator's pure builders: Task objects, status from the replicated state, the worker
Deployment and the latency ConfigMap."""

from __future__ import annotations

import json

import pytest

from pipeorch.core.regions import CloudRegionSpec
from pipeorch.core.runs import Artifact, Run, RunPhase, Task, TaskPhase
from pipeorch.k8s import manifests as m

OWNER = m.Owner("Pipeline", "energy", "uid-1")
T0 = 1_790_000_000.0


def task(phase: TaskPhase, **fields: object) -> Task:
    return Task(
        task_id="energy.load", pipeline="energy", step="load", depends_on=[], phase=phase, **fields
    )  # type: ignore[arg-type]


def condition(status: dict[str, object]) -> tuple[object, object, object]:
    (c,) = status["conditions"]  # type: ignore[misc]
    return c["type"], c["status"], c["reason"]


def test_a_task_is_named_by_pipeline_and_step_and_owned_by_its_pipeline() -> None:
    body = m.task_manifest(OWNER, "ns", "load")
    assert body["metadata"]["name"] == "energy-load"
    assert body["spec"] == {"pipeline": "energy", "step": "load", "taskId": "energy.load"}
    (ref,) = body["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "pipeorch.dev/v1alpha1",
        "kind": "Pipeline",
        "name": "energy",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert body["metadata"]["labels"][m.PIPELINE_LABEL] == "energy"


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (TaskPhase.READY, "Unknown"),
        (TaskPhase.RUNNING, "Unknown"),
        (TaskPhase.SUCCEEDED, "True"),
        (TaskPhase.FAILED, "False"),
        (TaskPhase.CANCELLED, "False"),
        (TaskPhase.SKIPPED, "False"),
    ],
)
def test_the_succeeded_condition_follows_the_task_phase(phase: TaskPhase, expected: str) -> None:
    status = m.task_status(task(phase, ready_at=T0))
    assert status["phase"] == phase.value
    assert condition(status) == ("Succeeded", expected, phase.value)


def test_a_finished_task_status_has_where_when_and_its_outputs() -> None:
    done = task(
        TaskPhase.SUCCEEDED,
        attempt=1,
        worker_id="aws-w1",
        region="aws",
        started_at=T0,
        finished_at=T0 + 2.7,
        outputs=[Artifact("a.csv", "runs/energy/load/attempt-1/a.csv", 10, "0" * 64)],
    )
    status = m.task_status(done)
    assert status["region"] == "aws"
    assert status["worker"] == "aws-w1"
    assert status["attempt"] == 1
    assert status["startedAt"] == "2026-09-21T14:13:20Z"
    assert status["finishedAt"] == "2026-09-21T14:13:22Z"
    assert status["outputs"] == [
        {"name": "a.csv", "key": "runs/energy/load/attempt-1/a.csv", "size": 10, "sha256": "0" * 64}
    ]


def test_the_same_state_gives_the_same_status() -> None:
    # The mirror patches only what changed; a clock inside would make every status new.
    a = m.task_status(task(TaskPhase.RUNNING, started_at=T0, worker_id="w"))
    b = m.task_status(task(TaskPhase.RUNNING, started_at=T0, worker_id="w"))
    assert a == b
    assert "finishedAt" not in a


def test_a_pipeline_status_counts_progress_and_says_why_it_failed() -> None:
    run = Run("energy", "uid-1", "{}", T0, phase=RunPhase.FAILED, message="step 'load' failed")
    run.finished_at, run.revision = T0 + 5, 9
    tasks = [task(TaskPhase.SUCCEEDED, started_at=T0), task(TaskPhase.FAILED)]
    status = m.pipeline_status(run, tasks)
    assert status["phase"] == "Failed"
    assert status["progress"] == "1/2"
    assert status["revision"] == 9
    assert status["message"] == "step 'load' failed"
    assert condition(status) == ("Succeeded", "False", "Failed")


def test_a_refused_pipeline_is_invalid_with_the_field_named() -> None:
    status = m.refused_status("Invalid", "Invalid", "spec.steps[0].dependsOn: cycle: a -> a", T0)
    assert status["phase"] == "Invalid"
    assert status["message"].startswith("spec.steps[0].dependsOn")
    assert condition(status) == ("Succeeded", "False", "Invalid")


def test_a_region_is_ready_when_all_its_workers_are_online() -> None:
    assert m.region_status(2, 2, 3)["conditions"][0]["status"] == "True"
    short = m.region_status(1, 2, 3)
    assert short["readyWorkers"] == 1
    assert short["conditions"][0]["reason"] == "WorkersMissing"


POD = m.WorkerPodSettings("img:1", "cp:7100", "minio:9000", "store-secret")


def test_the_worker_deployment_is_pinned_to_its_region_and_restricted() -> None:
    spec = CloudRegionSpec.model_validate(
        {"provider": "aws", "workers": {"replicas": 3, "slots": 2}}
    )
    body = m.worker_deployment(m.Owner("CloudRegion", "aws", "u"), "ns", spec, POD)
    pod = body["spec"]["template"]["spec"]
    assert body["spec"]["replicas"] == 3
    assert pod["nodeSelector"] == {"pipeorch.dev/region": "aws"}
    (container,) = pod["containers"]
    assert container["image"] == "img:1"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["PIPEORCH_WORKER_REGION"] == "aws"
    assert env["PIPEORCH_WORKER_SLOTS"] == "2"
    assert json.loads(env["PIPEORCH_WORKER_CONTROL_PLANE"]) == ["cp:7100"]
    assert env["PIPEORCH_WORKER_STORE_SECRET_KEY"]["secretKeyRef"]["name"] == "store-secret"
    assert body["metadata"]["ownerReferences"][0]["kind"] == "CloudRegion"


def test_a_region_image_wins_over_the_default() -> None:
    spec = CloudRegionSpec.model_validate({"provider": "gcp", "workers": {"image": "mine:2"}})
    body = m.worker_deployment(m.Owner("CloudRegion", "gcp", "u"), "ns", spec, POD)
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"


def test_the_latency_configmap_holds_every_pair_once() -> None:
    specs = {
        "aws": CloudRegionSpec.model_validate({"provider": "aws", "latencyMs": {"gcp": 50}}),
        "gcp": CloudRegionSpec.model_validate({"provider": "gcp", "jitterMs": 8}),
    }
    body = m.latency_configmap("ns", specs)
    assert body["metadata"]["name"] == "pipeorch-latency"
    links = json.loads(body["data"]["latency.json"])["links"]
    assert links == [{"a": "aws", "b": "gcp", "rttMs": 50, "jitterMs": 8}]
