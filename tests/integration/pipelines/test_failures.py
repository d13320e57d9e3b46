"""Failures during pipelines: lost workers, a lost leader, failing and slow steps, a lost
object store, duplicate and invalid submissions. Real processes and a real MinIO throughout."""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from pathlib import Path

import grpc
import httpx
import pytest

from pipeorch.local.cluster import wait_until

from .conftest import PipelineCluster

PY = sys.executable


def manifest(name: str, steps: str, spec_extra: str = "") -> str:
    head = f"apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n"
    return head + spec_extra + "  steps:\n" + textwrap.indent(textwrap.dedent(steps), "    ")


def effect_step(
    name: str, effects: Path, sleep: float = 0.0, deps: str = "", extra: str = ""
) -> str:
    """A command step that records its run in ``effects`` and writes its output."""
    code = (
        "import os,time;"
        f"time.sleep({sleep});"
        "env=os.environ;"
        "line=env['PIPEORCH_STEP']+' '+env['PIPEORCH_ATTEMPT']+chr(10);"
        f"open({str(effects)!r},'a').write(line);"
        "open(env['PIPEORCH_OUTPUT_OUT_TXT'],'w').write(env['PIPEORCH_STEP'])"
    )
    dep = f", dependsOn: [{deps}]" if deps else ""
    return f'- {{name: {name}, command: [{PY}, -c, "{code}"], outputs: [out.txt]{dep}{extra}}}\n'


def effects_of(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def running_task(p: PipelineCluster, name: str, step: str):
    def running():
        task = next(t for t in p.status(name).tasks if t.step == step)
        return task if task.phase == "Running" else None

    return wait_until(running, 30, interval=0.05, what=f"{step} running")


def test_worker_killed_mid_step_is_retried_elsewhere_and_completes_once(pipelines, tmp_path):
    effects = tmp_path / "effects"
    pipelines.submit(manifest("lost-worker", effect_step("slow", effects, sleep=3)))
    task = running_task(pipelines, "lost-worker", "slow")
    pipelines.cluster.workers[task.worker_id].kill()  # SIGKILL, mid-step

    status = pipelines.wait_finished("lost-worker")
    assert status.phase == "Succeeded"
    (slow,) = status.tasks
    assert slow.attempt == 2
    assert slow.worker_id != task.worker_id
    assert slow.app_failures == 0  # the retry budget was not spent
    assert slow.infra_failures == 1
    assert slow.outputs[0].key.endswith("/attempt-2/out.txt")
    assert pipelines.output(status, "slow", "out.txt") == b"slow"
    assert effects_of(effects) == ["slow 2"]  # the killed attempt never got to its effect


def test_leader_killed_mid_pipeline_loses_and_doubles_nothing(pipelines, tmp_path):
    effects = tmp_path / "effects"
    steps = effect_step("s0", effects, sleep=0.3)
    for i in range(1, 6):
        steps += effect_step(f"s{i}", effects, sleep=0.3, deps=f"s{i - 1}")
    pipelines.submit(manifest("lost-leader", steps))
    running_task(pipelines, "lost-leader", "s2")
    cluster = pipelines.cluster
    cluster.kill_replica(cluster.wait_for_leader())

    status = pipelines.wait_finished("lost-leader")
    assert status.phase == "Succeeded"
    assert [t.attempt for t in status.tasks] == [1] * 6
    assert sorted(effects_of(effects)) == [f"s{i} 1" for i in range(6)]


def test_failing_step_retries_to_its_limit_then_fails_and_nothing_downstream_runs(
    pipelines, tmp_path
):
    effects = tmp_path / "effects"
    boom = (
        f"- {{name: boom, command: [{PY}, -c, \"import sys; print('bad input'); sys.exit(3)\"], "
        "retry: {limit: 2, backoffSeconds: 0.1}}\n"
    )
    pipelines.submit(manifest("failing", boom + effect_step("after", effects, deps="boom")))
    status = pipelines.wait_finished("failing")
    assert status.phase == "Failed"
    assert status.message == "step 'boom' failed"
    boom_task, after = status.tasks
    assert (boom_task.phase, boom_task.attempt, boom_task.app_failures) == ("Failed", 3, 3)
    assert boom_task.message == "exit code 3: bad input"
    assert "bad input" in boom_task.log_tail
    assert after.phase == "Skipped"
    assert "upstream step 'boom' failed" in after.message
    assert effects_of(effects) == []


def test_a_step_over_its_timeout_is_killed_and_fails(pipelines):
    slow = (
        f'- {{name: slow, command: [{PY}, -c, "import time; time.sleep(60)"], timeoutSeconds: 1}}\n'
    )
    pipelines.submit(manifest("too-slow", slow))
    status = pipelines.wait_finished("too-slow")
    (task,) = status.tasks
    assert (status.phase, task.phase) == ("Failed", "Failed")
    assert task.message == "timed out after 1s"
    assert task.finished_at - task.started_at < 30


def test_object_store_down_during_a_step_is_an_infrastructure_failure_retried_later(
    pipelines, tmp_path
):
    effects = tmp_path / "effects"
    pipelines.submit(manifest("store-down", effect_step("upload", effects, sleep=1.5)))
    running_task(pipelines, "store-down", "upload")
    store = pipelines.cluster.store
    store.kill(signal.SIGKILL)

    def infra_failed():
        task = pipelines.status("store-down").tasks[0]
        return task if task.infra_failures >= 1 else None

    failed = wait_until(infra_failed, 30, what="an infrastructure failure")
    assert failed.app_failures == 0
    health = httpx.get(f"http://{pipelines.cluster.replicas['cp-2'].http}/healthz", timeout=5)
    assert health.json()["dependencies"]["object_store"].startswith("unreachable")
    pipelines.cluster.start_store()
    status = pipelines.wait_finished("store-down", timeout=90)
    assert status.phase == "Succeeded"
    task = status.tasks[0]
    assert task.app_failures == 0
    assert task.infra_failures >= 1
    assert pipelines.output(status, "upload", "out.txt") == b"upload"


def test_submitting_the_same_name_twice_runs_it_once(pipelines, tmp_path):
    effects = tmp_path / "effects"
    text = manifest("once", effect_step("only", effects))
    assert pipelines.submit(text).created
    assert not pipelines.submit(text).created
    status = pipelines.wait_finished("once")
    assert status.phase == "Succeeded"
    assert (status.tasks[0].log_key, status.tasks[0].log_tail) == ("", "")  # it printed nothing
    time.sleep(0.5)
    assert effects_of(effects) == ["only 1"]
    assert [p.name for p in pipelines.list()] == ["once"]


def test_an_invalid_pipeline_is_rejected_with_all_its_errors(pipelines):
    bad = manifest(
        "bad",
        """\
        - {name: a, run: "m:f", dependsOn: [b]}
        - {name: b, run: "m:f", dependsOn: [a, ghost]}
        - {name: C, command: [true], colour: red}
        """,
    )
    with pytest.raises(grpc.RpcError) as error:
        pipelines.submit(bad)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    for fragment in (
        "cycle: a -> b -> a",
        "spec.steps[1].dependsOn[1]: unknown step 'ghost'",
        "spec.steps[2].name",
        "spec.steps[2].colour: unknown field",
    ):
        assert fragment in details
    with pytest.raises(grpc.RpcError):
        pipelines.status("bad")
