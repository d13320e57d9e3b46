"""One Raft replica for the benchmarks: a real RaftNode in its own process, driven over
stdin/stdout with one JSON object per line, so commit latency is measured without any RPC
layer in the way."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from pipeorch.core.state import noop_cmd
from pipeorch.errors import Unavailable
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings


def latency(node: RaftNode, n: int) -> dict[str, Any]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        node.write(noop_cmd(f"l{i}"))
        samples.append(time.perf_counter() - start)
    return {"samples": samples}


def throughput(node: RaftNode, n: int, window: int) -> dict[str, Any]:
    outstanding: deque[Future[Any]] = deque()
    start = time.perf_counter()
    for i in range(n):
        if len(outstanding) >= window:
            outstanding.popleft().result(30)
        outstanding.append(node.submit(noop_cmd(f"t{i}")))
    while outstanding:
        outstanding.popleft().result(30)
    return {"seconds": time.perf_counter() - start, "writes": n}


def first_commit(node: RaftNode, timeout: float) -> dict[str, Any]:
    """Keep writing until one commits; report when (CLOCK_MONOTONIC is machine-wide)."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        try:
            node.write(noop_cmd(f"f{attempts}"), timeout=0.5)
            return {"committed_at": time.monotonic(), "attempts": attempts}
        except Unavailable:
            time.sleep(0.005)
    return {"committed_at": None, "attempts": attempts}


def main() -> None:
    settings = ControlPlaneSettings.model_validate_json(sys.argv[1])
    transitions: list[tuple[float, str]] = []
    node = RaftNode(
        settings, on_state_change=lambda state: transitions.append((time.monotonic(), state))
    )
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "status":
            s = node.status()
            reply: dict[str, Any] = {
                "state": s.state,
                "leader": s.leader_id,
                "term": s.term,
                "applied": s.applied_index,
                "commit": s.commit_index,
                "caught_up": node.is_caught_up(max_lag=0),
                "peers_connected": sum(p.connected for p in s.peers),
                "last_log": node._syncobj._SyncObj__getCurrentLogIndex(),
                "applied_truncations": s.applied_truncations,
                "stale_appends_neutralised": s.stale_appends_neutralised,
            }
        elif op == "latency":
            reply = latency(node, request["n"])
        elif op == "throughput":
            reply = throughput(node, request["n"], request["window"])
        elif op == "first_commit":
            reply = first_commit(node, request["timeout"])
            reply["transitions"] = transitions[-6:]
        else:
            reply = {"error": f"unknown op {op!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    node.destroy()


if __name__ == "__main__":
    main()
