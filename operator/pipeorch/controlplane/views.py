"""Conversions from core objects to the proto contract's messages."""

from __future__ import annotations

import json

from pipeorch.controlplane.service import RunView, Work
from pipeorch.core.runs import Artifact, FailureClass, Task
from pipeorch.core.workers import Worker, WorkerStatus
from pipeorch.v1 import pipeorch_pb2 as pb

STATUS_PB = {
    WorkerStatus.ONLINE: pb.WORKER_STATUS_ONLINE,
    WorkerStatus.OFFLINE: pb.WORKER_STATUS_OFFLINE,
}
FAILURE_PB = {
    FailureClass.APPLICATION.value: pb.FAILURE_CLASS_APPLICATION,
    FailureClass.INFRASTRUCTURE.value: pb.FAILURE_CLASS_INFRASTRUCTURE,
}
FAILURE_FROM_PB = {v: k for k, v in FAILURE_PB.items()}


def worker_pb(worker: Worker) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        worker_id=worker.worker_id,
        region=worker.region,
        address=worker.address,
        status=STATUS_PB[worker.status],
        heartbeat_interval_seconds=worker.heartbeat_interval,
        registered_at=worker.registered_at,
        last_heartbeat=worker.last_heartbeat,
        labels=worker.labels,
        slots=worker.slots,
    )


def artifact_pb(artifact: Artifact) -> pb.ArtifactRef:
    return pb.ArtifactRef(
        name=artifact.name,
        key=artifact.key,
        size_bytes=artifact.size,
        sha256=artifact.sha256,
        step=artifact.step,
        region=artifact.region,
    )


def artifact_from_pb(ref: pb.ArtifactRef, step: str) -> dict[str, object]:
    return Artifact(
        name=ref.name,
        key=ref.key,
        size=ref.size_bytes,
        sha256=ref.sha256,
        step=step,
        region=ref.region,
    ).to_dict()


def task_pb(task: Task) -> pb.TaskStatus:
    return pb.TaskStatus(
        task_id=task.task_id,
        pipeline=task.pipeline,
        step=task.step,
        phase=task.phase.value,
        region=task.region,
        worker_id=task.worker_id,
        attempt=task.attempt,
        started_at=task.started_at,
        finished_at=task.finished_at,
        message=task.message,
        failure_class=FAILURE_PB.get(task.failure_class, pb.FAILURE_CLASS_UNSPECIFIED),
        outputs=[artifact_pb(a) for a in task.outputs],
        estimated_transfer_seconds=task.estimated_transfer_seconds,
        log_key=task.log_key,
        log_tail=task.log_tail,
        app_failures=task.app_failures,
        infra_failures=task.infra_failures,
        scheduled_at=task.scheduled_at,
        ready_at=task.ready_at,
    )


def run_pb(view: RunView) -> pb.PipelineStatus:
    run = view.run
    return pb.PipelineStatus(
        name=run.name,
        phase=run.phase.value,
        progress=view.progress,
        message=run.message,
        submitted_at=run.submitted_at,
        started_at=view.started_at,
        finished_at=run.finished_at,
        tasks=[task_pb(t) for t in view.tasks],
        submission_key=run.submission_key,
        revision=run.revision,
    )


def assignment_pb(work: Work) -> pb.TaskAssignment:
    task, step = work.task, work.step
    return pb.TaskAssignment(
        task_id=task.task_id,
        attempt=task.attempt,
        pipeline=task.pipeline,
        step=task.step,
        run=step.run or "",
        command=step.command or [],
        params_json=json.dumps(step.params, sort_keys=True),
        inputs=[artifact_pb(a) for a in work.inputs],
        outputs=list(step.outputs),
        timeout_seconds=step.timeoutSeconds,
        lease_expires_at=task.lease_expires_at,
        output_prefix=f"runs/{task.pipeline}/{task.step}/attempt-{task.attempt}/",
    )
