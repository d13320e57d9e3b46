"""One Raft replica for the benchmarks: a real RaftNode in its own process, driven over
stdin/stdout with one JSON object per line, so commit latency is measured without any RPC
layer in the way."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Any

from pipeorch.core.state import noop_cmd
from pipeorch.errors import Unavailable
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings

#: How long the writes may go on failing, none committing, before the benchmark gives up.
GIVE_UP_AFTER = 60.0


class Retries:
    """Writes that did not commit, by reason; the benchmarks submit each of them again. Under
    load an election can happen (a missed heartbeat on a busy machine): a new leader discards
    the entries the old one had not committed, and until it is elected no write can commit at
    all. Retried until they commit, those writes still count, and so does the time the
    election cost; how many were retried, and why, is reported beside the figures."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()
        self._last_commit = time.monotonic()

    def committed(self, future: Future[Any]) -> bool:
        """Wait for ``future``: True if its write committed, else count why and say False."""
        try:
            future.result(30)
        except Unavailable as e:
            # The message without its "(last known leader: ...)" hint.
            self.reasons[str(e.args[0]).partition(" (")[0]] += 1
        except TimeoutError:  # a request pysyncobj lost: it never answers
            self.reasons["not committed within 30 s"] += 1
        else:
            self._last_commit = time.monotonic()
            return True
        if time.monotonic() - self._last_commit > GIVE_UP_AFTER:
            raise RuntimeError(f"no write committed for {GIVE_UP_AFTER:g} s: {self.reasons}")
        return False

    def report(self) -> dict[str, Any]:
        return {"retried": sum(self.reasons.values()), "retry_reasons": dict(self.reasons)}


def propose(node: RaftNode, token: str) -> Future[Any]:
    future = node.submit(noop_cmd(token))
    if future.done() and future.exception() is not None:
        time.sleep(0.005)  # refused at once (no quorum: an election under way): do not spin
    return future


def latency(node: RaftNode, n: int) -> dict[str, Any]:
    """Lone writes one after the other; a retried write's sample runs until it committed."""
    samples = []
    retries = Retries()
    for i in range(n):
        start = time.perf_counter()
        while not retries.committed(propose(node, f"l{i}")):
            pass
        samples.append(time.perf_counter() - start)
    return {"samples": samples, **retries.report()}


def throughput(node: RaftNode, n: int, window: int) -> dict[str, Any]:
    """``n`` writes, ``window`` of them in flight; every one of them commits within the
    measured seconds (a write that did not is submitted again, at the back of the window)."""
    outstanding: deque[tuple[int, Future[Any]]] = deque()
    retries = Retries()

    def settle_oldest() -> None:
        i, future = outstanding.popleft()
        if not retries.committed(future):
            outstanding.append((i, propose(node, f"t{i}")))

    start = time.perf_counter()
    for i in range(n):
        while len(outstanding) >= window:
            settle_oldest()
        outstanding.append((i, propose(node, f"t{i}")))
    while outstanding:
        settle_oldest()
    return {"seconds": time.perf_counter() - start, "writes": n, **retries.report()}


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
