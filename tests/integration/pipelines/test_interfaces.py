"""The HTTP API and the CLI commands over a running system."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from pipeorch.local.cluster import wait_until
from pipeorch.v1 import pipeorch_pb2 as pb

from .conftest import EXAMPLES, PipelineCluster

PIPEORCH = [sys.executable, "-m", "pipeorch.cli"]


def cli(p: PipelineCluster, *args: str, env: dict[str, str] | None = None):
    addresses = [r.grpc for r in p.cluster.replicas.values()]
    return subprocess.run(
        [*PIPEORCH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIPEORCH_CONTROL_PLANE": ",".join(addresses), **(env or {})},
    )


def test_submit_wait_get_describe_logs(pipelines: PipelineCluster):
    result = cli(pipelines, "submit", str(EXAMPLES / "energy-pipeline.yaml"), "--wait")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "pipeline/energy-report submitted"
    assert any("generate" in line and "Running" in line and " on " in line for line in lines)
    assert lines[-1].startswith("pipeline/energy-report Succeeded in ")

    again = cli(pipelines, "submit", str(EXAMPLES / "energy-pipeline.yaml"))
    assert again.stdout.strip() == "pipeline/energy-report already exists (not run again)"

    tasks = cli(pipelines, "get", "tasks", "-o", "wide").stdout.splitlines()
    assert tasks[0].split()[:7] == [
        "PIPELINE",
        "STEP",
        "PHASE",
        "REGION",
        "WORKER",
        "ATTEMPT",
        "AGE",
    ]
    assert [row.split()[1:3] for row in tasks[1:]] == [
        ["generate", "Succeeded"],
        ["analyze", "Succeeded"],
        ["report", "Succeeded"],
    ]
    pipelines_table = cli(pipelines, "get", "pipelines").stdout.splitlines()
    assert pipelines_table[1].split()[:3] == ["energy-report", "Succeeded", "3/3"]

    described = cli(pipelines, "describe", "pipeline", "energy-report").stdout
    assert "Phase:     Succeeded" in described
    assert "report/energy_report.csv" in described

    tail = cli(pipelines, "logs", "energy-report", "analyze").stdout
    assert "plant-b: 168 readings, 2 anomalies" in tail
    store = pipelines.cluster.store
    full = cli(
        pipelines,
        "logs",
        "energy-report",
        "report",
        env={
            "PIPEORCH_STORE_ENDPOINT": store.address,
            "PIPEORCH_STORE_ACCESS_KEY": store.access_key,
            "PIPEORCH_STORE_SECRET_KEY": store.secret_key,
        },
    ).stdout
    assert full.strip() == "report written: 3 sites, largest consumer plant-c"


def test_http_pipeline_api(pipelines: PipelineCluster):
    base = f"http://{pipelines.cluster.replicas['cp-1'].http}"
    manifest = (EXAMPLES / "energy-pipeline.yaml").read_text()
    created = httpx.post(f"{base}/pipelines", content=manifest, timeout=10)
    assert created.status_code == 201
    assert created.json()["name"] == "energy-report"
    assert httpx.post(f"{base}/pipelines", content=manifest, timeout=10).status_code == 200
    pipelines.wait_finished("energy-report")

    run = httpx.get(f"{base}/pipelines/energy-report", timeout=10).json()
    assert (run["phase"], run["progress"]) == ("Succeeded", "3/3")
    tasks = httpx.get(f"{base}/pipelines/energy-report/tasks", timeout=10).json()
    assert [t["step"] for t in tasks] == ["generate", "analyze", "report"]
    one = httpx.get(f"{base}/tasks/energy-report.analyze", timeout=10).json()
    assert one["dependsOn"] == ["generate"]
    assert one["outputs"][0]["name"] == "summary.json"

    health = httpx.get(f"{base}/healthz", timeout=10).json()
    assert health["dependencies"] == {
        "quorum": "ok",
        "leader": pipelines.cluster.wait_for_leader(),
        "object_store": "ok",
    }

    missing = httpx.get(f"{base}/pipelines/nope", timeout=10)
    assert missing.status_code == 404
    bad = httpx.post(f"{base}/pipelines", content="kind: Pipeline\n", timeout=10)
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert {"apiVersion", "metadata", "spec"} <= fields


def test_waiting_workers_get_a_new_pipelines_first_steps_in_the_submit_commit(
    pipelines: PipelineCluster,
):
    cluster = pipelines.cluster
    leader = cluster.replicas[cluster.wait_for_leader()]

    def waiting() -> dict[str, int]:
        return httpx.get(f"http://{leader.http}/cluster", timeout=5).json()["waiting_for_work"]

    # All four workers have moved to the leader, and their long polls wait there.
    wait_until(lambda: len(waiting()) == 4, 30, what="every worker waiting on the leader")
    manifest = (
        '{"apiVersion": "pipeorch.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "q"},'
        ' "spec": {"steps": [{"name": "one", "command": ["true"]},'
        ' {"name": "two", "command": ["true"], "dependsOn": ["one"]}]}}'
    )
    pipelines.submit(manifest)
    status = pipelines.wait_finished("q")
    assert status.phase == "Succeeded"
    first, second = sorted(status.tasks, key=lambda t: t.started_at)
    # Ready and running in the same commit: the submission's own.
    assert first.started_at == first.ready_at
    assert first.step == "one"
    # Its worker reports when it got the task: after the commit that made it ready, before
    # the completion (one clock on loopback).
    for task in (first, second):
        assert task.ready_at < task.received_at < task.finished_at
    assert second.phase == "Succeeded"


def _sleeper(name: str, seconds: float) -> str:
    step = {"name": "nap", "command": ["sleep", str(seconds)]}
    return json.dumps(
        {
            "apiVersion": "pipeorch.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name},
            "spec": {"steps": [step]},
        }
    )


def test_submit_and_wait_in_one_call(pipelines: PipelineCluster):
    def submit(manifest: str, wait: float) -> pb.SubmitPipelineResponse:
        request = pb.SubmitPipelineRequest(manifest=manifest, wait_seconds=wait)
        return pipelines.client.call(lambda s, t: s.SubmitPipeline(request, timeout=t + wait))

    done = submit(_sleeper("quick", 0), 30)
    assert done.created
    assert (done.pipeline.phase, done.pipeline.progress) == ("Succeeded", "1/1")
    assert done.pipeline.tasks[0].phase == "Succeeded"

    # A wait shorter than the pipeline answers with the pipeline as it is then.
    start = time.monotonic()
    slow = submit(_sleeper("slow", 3), 0.5)
    assert 0.5 <= time.monotonic() - start < 3
    assert slow.created
    assert slow.pipeline.phase == "Running"
    # The same pipeline again: nothing new runs, and the answer waits for the first run.
    again = submit(_sleeper("slow", 3), 30)
    assert not again.created
    assert again.pipeline.phase == "Succeeded"
    assert again.pipeline.tasks[0].attempt == 1

    base = f"http://{pipelines.cluster.replicas['cp-2'].http}"
    http = httpx.post(f"{base}/pipelines?wait=30", content=_sleeper("web", 0), timeout=40)
    assert http.status_code == 201
    assert (http.json()["phase"], http.json()["progress"]) == ("Succeeded", "1/1")
