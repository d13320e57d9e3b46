"""The user-facing commands: submit, get, describe, logs, cancel (gRPC ControlService)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import grpc

from pipeorch.core.routing import ReplicaRole, leader_first
from pipeorch.errors import Unavailable
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

T = TypeVar("T")
TERMINAL_RUN = {"Succeeded", "Failed", "Cancelled"}
_RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class Client:
    """ControlService over any of the given replicas: the Raft leader first (found on the first
    call, see pipeorch.core.routing), then the others in order until one answers."""

    def __init__(self, addresses: list[str], timeout: float = 10.0) -> None:
        self._addresses = addresses
        self._timeout = timeout
        self._channels = {a: grpc.insecure_channel(a) for a in addresses}
        # Built once: a stub makes a callable per method, about 60 us, on every call otherwise.
        self._stubs = {a: pb_grpc.ControlServiceStub(c) for a, c in self._channels.items()}
        self._ordered = len(addresses) < 2

    def call(self, method: Callable[[pb_grpc.ControlServiceStub, float], T]) -> T:
        if not self._ordered:
            self._ordered = True
            self._addresses = leader_first(self._addresses, self._roles())
        errors = []
        for address in self._addresses:
            try:
                return method(self._stubs[address], self._timeout)
            except grpc.RpcError as e:
                if e.code() not in _RETRY_CODES:
                    raise
                errors.append(f"{address}: {e.details()}")
        raise Unavailable("no control-plane replica answered: " + "; ".join(errors))

    def _roles(self) -> dict[str, ReplicaRole]:
        roles = {}
        request = pb.ClusterStateRequest(brief=True)
        for address, stub in self._stubs.items():
            try:
                # Short: a replica that is down must not hold up the command itself.
                answer = stub.ClusterState(request, timeout=1.0)
            except grpc.RpcError:
                continue
            roles[address] = ReplicaRole(answer.node_id, answer.raft_state, answer.term)
        return roles

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def default_addresses() -> list[str]:
    env = os.environ.get("PIPEORCH_CONTROL_PLANE", "")
    return [a.strip() for a in env.split(",") if a.strip()] or ["127.0.0.1:7100"]


# ---- formatting -----------------------------------------------------------------------------


def _age(since: float, now: float) -> str:
    if not since:
        return "-"
    seconds = max(0, int(now - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _task_row(t: pb.TaskStatus, now: float, wide: bool) -> list[str]:
    row = [t.pipeline, t.step, t.phase, t.region or "-", t.worker_id or "-", str(t.attempt)]
    row.append(_age(t.started_at or t.ready_at, now))
    if wide:
        estimate = t.estimated_transfer_seconds
        cost = f"{estimate * 1000:.1f}ms" if estimate else "-"
        row += [cost, (t.message or "").replace("\n", " ")[:80]]
    return row


def print_tasks(tasks: list[pb.TaskStatus], out: TextIO, wide: bool = False) -> None:
    header = ["PIPELINE", "STEP", "PHASE", "REGION", "WORKER", "ATTEMPT", "AGE"]
    if wide:
        header += ["TRANSFER", "MESSAGE"]
    now = time.time()
    table([header, *[_task_row(t, now, wide) for t in tasks]], out)


def print_pipelines(pipelines: list[pb.PipelineStatus], out: TextIO) -> None:
    now = time.time()
    rows = [["NAME", "PHASE", "PROGRESS", "AGE", "MESSAGE"]]
    rows += [[p.name, p.phase, p.progress, _age(p.submitted_at, now), p.message] for p in pipelines]
    table(rows, out)


def task_json(t: pb.TaskStatus) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(t, preserving_proto_field_name=True)


# ---- commands -------------------------------------------------------------------------------


#: How long one watch request may wait for news before it is asked again.
WATCH_SECONDS = 10.0


def submit(
    client: Client,
    path: Path,
    wait: bool,
    out: TextIO,
    poll: float = 0.2,
    stop: threading.Event | None = None,
) -> int:
    manifest = sys.stdin.read() if str(path) == "-" else path.read_text()
    response = client.call(
        lambda s, t: s.SubmitPipeline(pb.SubmitPipelineRequest(manifest=manifest), timeout=t)
    )
    name = response.pipeline.name
    verb = "submitted" if response.created else "already exists (not run again)"
    out.write(f"pipeline/{name} {verb}\n")
    if not wait:
        return 0
    return follow(client, name, out, poll, stop)


def follow(
    client: Client,
    name: str,
    out: TextIO,
    poll: float = 0.2,
    stop: threading.Event | None = None,
) -> int:
    """Print each task's phase changes until the pipeline finishes; exit 0 only on success.
    With ``stop``, give up (130) soon after it is set: the pipeline itself goes on."""
    seen: dict[str, tuple[str, str, int]] = {}
    revision = 0
    # A watch is answered at once on any change; it is asked again at least this often, so
    # that a stop is noticed.
    watch = WATCH_SECONDS if stop is None else min(WATCH_SECONDS, 1.0)
    while True:
        if stop is not None and stop.is_set():
            out.write(f"pipeline/{name}: stopped following it; it was still running\n")
            return 130
        # A long poll: answered as soon as something changed, at most every `poll` seconds.
        request = pb.GetPipelineRequest(name=name, wait_seconds=watch, after_revision=revision)
        status = client.call(
            lambda s, t, r=request: s.GetPipeline(r, timeout=t + watch)  # type: ignore[misc]
        )
        revision = status.revision
        for task in status.tasks:
            key = (task.phase, task.worker_id, task.attempt)
            if seen.get(task.step) != key:
                seen[task.step] = key
                where = f" on {task.worker_id} ({task.region})" if task.worker_id else ""
                note = f": {task.message}" if task.message else ""
                out.write(
                    f"  [{status.progress:>5}] {task.step:<16} {task.phase:<9}{where}{note}\n"
                )
                out.flush()
        if status.phase in TERMINAL_RUN:
            elapsed = (status.finished_at - status.submitted_at) if status.finished_at else 0
            out.write(f"pipeline/{name} {status.phase} in {elapsed:.2f}s")
            out.write(f": {status.message}\n" if status.message else "\n")
            return 0 if status.phase == "Succeeded" else 1
        time.sleep(poll)


def describe(client: Client, name: str, out: TextIO) -> int:
    p = client.call(lambda s, t: s.GetPipeline(pb.GetPipelineRequest(name=name), timeout=t))
    out.write(f"Name:      {p.name}\nPhase:     {p.phase}\nProgress:  {p.progress}\n")
    if p.message:
        out.write(f"Message:   {p.message}\n")
    out.write("\n")
    print_tasks(list(p.tasks), out, wide=True)
    outputs = [(t.step, o) for t in p.tasks for o in t.outputs]
    if outputs:
        out.write("\nOutputs:\n")
        for step, o in outputs:
            out.write(f"  {step}/{o.name}  {o.size_bytes} bytes  sha256 {o.sha256[:12]}  {o.key}\n")
    return 0


def logs(client: Client, pipeline: str, step: str, out: TextIO) -> int:
    """The step's full log from the object store when PIPEORCH_STORE_* are set, else its tail."""
    p = client.call(lambda s, t: s.GetPipeline(pb.GetPipelineRequest(name=pipeline), timeout=t))
    task = next((t for t in p.tasks if t.step == step), None)
    if task is None:
        out.write(f"pipeline {pipeline!r} has no step {step!r}\n")
        return 1
    full = _full_log(task.log_key)
    if full is not None:
        out.write(full)
        return 0
    if task.log_tail:
        out.write(task.log_tail)
        if task.log_key:
            out.write(f"\n(last lines; the whole log is {task.log_key} in the object store)\n")
        return 0
    out.write(f"no log yet for {pipeline}/{step} ({task.phase})\n")
    return 0


def _full_log(key: str) -> str | None:
    endpoint = os.environ.get("PIPEORCH_STORE_ENDPOINT")
    if not key or not endpoint:
        return None
    from pipeorch_worker.store import ArtifactStore, StorageUnavailable

    store = ArtifactStore(
        endpoint,
        os.environ.get("PIPEORCH_STORE_ACCESS_KEY", ""),
        os.environ.get("PIPEORCH_STORE_SECRET_KEY", ""),
        os.environ.get("PIPEORCH_STORE_BUCKET", "pipeorch"),
    )
    try:
        return store.get_bytes(key).decode(errors="replace")
    except StorageUnavailable:
        return None


def cancel(client: Client, name: str, out: TextIO) -> int:
    p = client.call(
        lambda s, t: s.CancelPipeline(pb.CancelPipelineRequest(name=name), timeout=t)
    ).pipeline
    out.write(f"pipeline/{p.name} {p.phase}\n")
    return 0


def get(client: Client, kind: str, pipeline: str | None, output: str, out: TextIO) -> int:
    if kind in ("pipelines", "pipeline"):
        pipelines = list(
            client.call(
                lambda s, t: s.ListPipelines(pb.ListPipelinesRequest(), timeout=t)
            ).pipelines
        )
        if output == "json":
            from google.protobuf.json_format import MessageToDict

            out.write(json.dumps([MessageToDict(p) for p in pipelines], indent=2) + "\n")
        else:
            print_pipelines(pipelines, out)
        return 0
    tasks = list(
        client.call(
            lambda s, t: s.ListTasks(pb.ListTasksRequest(pipeline=pipeline or ""), timeout=t)
        ).tasks
    )
    if output == "json":
        out.write(json.dumps([task_json(t) for t in tasks], indent=2) + "\n")
    else:
        print_tasks(tasks, out, wide=output == "wide")
    return 0
