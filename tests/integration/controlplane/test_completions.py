"""Completions reported together (CompleteTasks) on three real replicas: one commit for the
lot, each answered in order with its own next task, a duplicate ignored, a malformed one
refused."""

from __future__ import annotations

import time

import grpc
import pytest

from pipeorch.local.cluster import LocalCluster
from pipeorch.v1 import pipeorch_pb2 as pb

from ..conftest import noop_manifest


def done(worker_id: str, task: pb.TaskAssignment) -> pb.CompleteTaskRequest:
    ref = pb.TaskRef(task_id=task.task_id, attempt=task.attempt)
    return pb.CompleteTaskRequest(worker_id=worker_id, task=ref, take_next=1)


def test_completions_of_two_workers_in_one_call_each_get_their_own_next_task(
    cluster: LocalCluster, stubs, control
):
    leader = cluster.wait_for_leader()
    worker, ctl = stubs[leader], control[leader]
    for worker_id in ("w1", "w2"):
        worker.Register(
            pb.RegisterRequest(
                worker_id=worker_id, region="aws", heartbeat_interval_seconds=30, slots=1
            ),
            timeout=5,
        )
    ctl.SubmitPipeline(pb.SubmitPipelineRequest(manifest=noop_manifest("four", list("abcd"))))
    first = {
        w: worker.AcquireTask(
            pb.AcquireTaskRequest(worker_id=w, wait_seconds=5, max_tasks=1), timeout=10
        ).task
        for w in ("w1", "w2")
    }
    assert all(first.values())

    answer = worker.CompleteTasks(
        pb.CompleteTasksRequest(
            completions=[
                done("w1", first["w1"]),
                done("w2", first["w2"]),
                done("w1", first["w1"]),  # the same report again
            ]
        ),
        timeout=10,
    )

    accepted = [r.accepted for r in answer.results]
    assert accepted == [True, True, False]
    handed = [[t.task_id for t in r.next_tasks] for r in answer.results]
    assert handed[2] == []
    assert sorted(handed[0] + handed[1]) == ["four.c", "four.d"]  # one each, none twice
    tasks = {t.task_id: t for t in ctl.GetPipeline(pb.GetPipelineRequest(name="four")).tasks}
    for worker_id, (ref,) in zip(("w1", "w2"), handed[:2], strict=True):
        assert (tasks[ref].phase, tasks[ref].worker_id) == ("Running", worker_id)
    assert {tasks[t.task_id].phase for t in first.values()} == {"Succeeded"}

    pairs = zip(("w1", "w2"), answer.results[:2], strict=True)
    last = [done(w, t) for w, r in pairs for t in r.next_tasks]
    final = worker.CompleteTasks(pb.CompleteTasksRequest(completions=last), timeout=10)
    assert [r.accepted for r in final.results] == [True, True]
    status = ctl.GetPipeline(pb.GetPipelineRequest(name="four"))
    assert (status.phase, status.progress) == ("Succeeded", "4/4")


@pytest.mark.parametrize("received_at", [float("nan"), float("inf"), -1.0])
def test_a_completion_with_a_receipt_time_that_is_not_a_time_is_refused_whole(
    cluster: LocalCluster, stubs, control, received_at: float
):
    leader = cluster.wait_for_leader()
    worker, ctl = stubs[leader], control[leader]
    worker.Register(
        pb.RegisterRequest(worker_id="w1", region="aws", heartbeat_interval_seconds=30, slots=1),
        timeout=5,
    )
    ctl.SubmitPipeline(pb.SubmitPipelineRequest(manifest=noop_manifest("one", ["a"])))
    task = worker.AcquireTask(
        pb.AcquireTaskRequest(worker_id="w1", wait_seconds=5, max_tasks=1), timeout=10
    ).task
    bad = done("w1", task)
    bad.received_at = received_at
    with pytest.raises(grpc.RpcError) as error:
        worker.CompleteTasks(pb.CompleteTasksRequest(completions=[bad]), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("received_at:")
    (status,) = ctl.GetPipeline(pb.GetPipelineRequest(name="one")).tasks
    assert status.phase == "Running"  # nothing of it was recorded

    fine = done("w1", task)
    fine.received_at = time.time()
    (answer,) = worker.CompleteTasks(pb.CompleteTasksRequest(completions=[fine])).results
    assert answer.accepted
