"""The proto and JSON renders of the state's runs and tasks, and the copies callers keep."""

from __future__ import annotations

import dataclasses

from pipeorch.controlplane import views
from pipeorch.controlplane.http_api import run_json
from pipeorch.controlplane.service import Work, copy_view
from pipeorch.core.runs import Artifact, FailureClass, Run, RunPhase, Task, TaskPhase
from pipeorch.core.spec import parse_pipeline
from pipeorch.v1 import pipeorch_pb2 as pb

ARTIFACT = Artifact("model.pkl", "runs/p/b/attempt-2/model.pkl", 12, "ab" * 32, "b", "gcp")


def every_field_set() -> Task:
    """A task with no field at its default, so a render that drops one shows it."""
    return Task(
        task_id="p.b",
        pipeline="p",
        step="b",
        depends_on=["a"],
        phase=TaskPhase.FAILED,
        attempt=2,
        app_failures=2,
        infra_failures=1,
        worker_id="gcp-w0",
        region="gcp",
        ready_at=1.0,
        not_before=1.5,
        scheduled_at=2.0,
        lease_expires_at=12.0,
        started_at=2.5,
        received_at=2.6,
        finished_at=3.0,
        message="exit code 1: boom",
        failure_class=FailureClass.APPLICATION.value,
        outputs=[ARTIFACT],
        log_key="runs/p/b/attempt-2/log.txt",
        log_tail="boom\n",
        estimated_transfer_seconds=0.25,
    )


def run_of(tasks: list[Task]) -> Run:
    return Run(
        name="p",
        submission_key="k",
        spec_json="{}",
        submitted_at=0.5,
        phase=RunPhase.FAILED,
        finished_at=3.0,
        message="step b failed",
        steps=[t.step for t in tasks],
        revision=7,
    )


def test_a_task_status_carries_every_field_of_the_message():
    status = views.task_pb(every_field_set())
    unset = {f.name for f in pb.TaskStatus.DESCRIPTOR.fields} - {
        f.name for f, _ in status.ListFields()
    }
    assert unset == set()
    assert status.failure_class == pb.FAILURE_CLASS_APPLICATION
    assert list(status.outputs) == [views.artifact_pb(ARTIFACT)]
    assert (status.phase, status.app_failures, status.infra_failures) == ("Failed", 2, 1)


def test_empty_fields_stay_unset_and_read_as_their_defaults():
    status = views.task_pb(Task("p.a", "p", "a", []))
    assert status == pb.TaskStatus(task_id="p.a", pipeline="p", step="a", phase="Pending")
    assert (status.message, status.failure_class, len(status.outputs)) == (
        "",
        pb.FAILURE_CLASS_UNSPECIFIED,
        0,
    )


def test_a_pipeline_status_sums_up_its_tasks():
    done = Task("p.a", "p", "a", [], TaskPhase.SUCCEEDED, attempt=1, started_at=2.0)
    tasks = [done, every_field_set()]
    status = views.status_pb(run_of(tasks), tasks)
    assert (status.name, status.phase, status.progress, status.revision) == (
        "p",
        "Failed",
        "1/2",
        7,
    )
    assert (status.submitted_at, status.started_at, status.finished_at) == (0.5, 2.0, 3.0)
    assert [t.task_id for t in status.tasks] == ["p.a", "p.b"]
    assert status.tasks[1] == views.task_pb(tasks[1])


def test_renders_keep_nothing_the_state_changes_later():
    task = every_field_set()
    run = run_of([task])
    kept = [views.status_pb(run, [task]), run_json(run, [task]), copy_view(run, [task])]
    before = [views.status_pb(run, [task]), run_json(run, [task]), copy_view(run, [task])]
    # What applying later entries does to the state's own objects:
    task.phase, task.message = TaskPhase.RETRYING, "again"
    task.outputs.append(dataclasses.replace(ARTIFACT, name="other"))
    run.steps.append("c")
    run.revision += 1
    assert kept == before


def test_an_assignment_carries_the_step_and_its_params_as_sorted_json():
    pipeline = parse_pipeline(
        "apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n"
        "  steps:\n  - {name: b, run: 'm:f', params: {z: 1, a: [2, {y: null, b: .5}]}}\n"
    )
    step = pipeline.spec.steps[0]
    work = Work("p.b", 2, "p", "b", 12.0, step, [ARTIFACT])
    first, again = views.assignment_pb(work), views.assignment_pb(work)
    assert first == again
    assert first.params_json == '{"a": [2, {"b": 0.5, "y": null}], "z": 1}'
    assert (first.task_id, first.attempt, first.run, first.timeout_seconds) == (
        "p.b",
        2,
        "m:f",
        3600,
    )
    assert first.output_prefix == "runs/p/b/attempt-2/"
    assert list(first.inputs) == [views.artifact_pb(ARTIFACT)]
    # Remembering the JSON leaves the step as it was: equal to a fresh parse, dumped alike.
    assert step == parse_pipeline(pipeline.model_dump_json()).spec.steps[0]
    assert "params_json" not in step.model_dump()
