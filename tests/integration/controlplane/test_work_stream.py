"""The Work stream on three real replicas: each request answered under its id, as it finishes;
a bad request gets its error on the stream, which stays open; a worker closing its side still
gets the answers to what it asked."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc

from pipeorch.local.cluster import LocalCluster
from pipeorch.v1 import pipeorch_pb2 as pb

from ..conftest import noop_manifest


class Stream:
    """A Work stream driven one message at a time from a synchronous test."""

    def __init__(self, stub) -> None:
        self._outbox: queue.Queue[pb.WorkRequest | None] = queue.Queue()
        self._answers = stub.Work(self._requests(), timeout=60)

    def _requests(self) -> Iterator[pb.WorkRequest]:
        while (request := self._outbox.get()) is not None:
            yield request

    def send(self, request_id: int, **request) -> None:
        self._outbox.put(pb.WorkRequest(id=request_id, **request))

    def answer(self) -> pb.WorkResponse:
        return next(self._answers)

    def close(self) -> list[pb.WorkResponse]:
        """Close our side; the answers still to come, then the end of the stream."""
        self._outbox.put(None)
        return list(self._answers)


def acquire(worker_id: str, wait: float) -> pb.AcquireTaskRequest:
    return pb.AcquireTaskRequest(worker_id=worker_id, wait_seconds=wait, max_tasks=1)


def test_requests_are_answered_under_their_ids_as_they_finish(
    cluster: LocalCluster, stubs, control
):
    leader = cluster.wait_for_leader()
    worker, ctl = stubs[leader], control[leader]
    stream = Stream(worker)

    stream.send(1, acquire=acquire("nobody", 0))
    unknown = stream.answer()
    assert (unknown.id, unknown.error_code) == (1, grpc.StatusCode.NOT_FOUND.value[0])
    assert "'nobody' is not registered" in unknown.error_message
    assert not unknown.HasField("acquire")

    stream.send(2)  # names no request
    empty = stream.answer()
    assert (empty.id, empty.error_code) == (2, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert "must be one of acquire, complete, fail" in empty.error_message

    worker.Register(
        pb.RegisterRequest(worker_id="w1", region="aws", heartbeat_interval_seconds=30, slots=1),
        timeout=5,
    )
    # A long-poll for work, then a report: the report is answered first, on the same stream.
    stream.send(3, acquire=acquire("w1", 20))
    ref = pb.TaskRef(task_id="ghost.a", attempt=1)
    failed = pb.FailTaskRequest(
        worker_id="w1", task=ref, failure_class=pb.FAILURE_CLASS_APPLICATION, message="boom"
    )
    stream.send(4, fail=failed)
    report = stream.answer()
    assert (report.id, report.error_code) == (4, 0)
    assert not report.fail.accepted
    assert "ghost.a" in report.fail.reason

    ctl.SubmitPipeline(pb.SubmitPipelineRequest(manifest=noop_manifest("streamed", ["a"])))
    handed = stream.answer()
    assert (handed.id, handed.acquire.task.task_id) == (3, "streamed.a")

    task = handed.acquire.task
    done = pb.CompleteTaskRequest(
        worker_id="w1", task=pb.TaskRef(task_id=task.task_id, attempt=task.attempt)
    )
    stream.send(5, complete=pb.CompleteTasksRequest(completions=[done, done]))
    completed = stream.answer()
    assert completed.id == 5
    assert [r.accepted for r in completed.complete.results] == [True, False]

    # Closing our side while a long-poll waits: it is still answered (empty), then the end.
    stream.send(6, acquire=acquire("w1", 0.5))
    rest = stream.close()
    assert [(a.id, a.error_code, a.acquire.HasField("task")) for a in rest] == [(6, 0, False)]
    status = ctl.GetPipeline(pb.GetPipelineRequest(name="streamed"))
    assert (status.phase, status.progress) == ("Succeeded", "1/1")
