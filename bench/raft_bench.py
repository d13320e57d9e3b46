"""Raft control-plane benchmarks on loopback.

* commit latency of lone writes (p50/p99), from the leader and from a follower, with our group
  commit and, for comparison, with pysyncobj's own batching;
* pipelined replicated writes per second (many writes in flight);
* leader SIGKILL to the first committed write through a survivor (p50/p99 over >= 10 kills),
  at the default timing (sized for a 125 ms worst round trip), each kill in steady state (all
  Raft links up);
* the Heartbeat RPC end to end (gRPC + Raft) against real `pipeorch controlplane` processes.

Every replica's counter of truncated applied entries is read after each scenario and reported;
it must be zero. A timed write that does not commit (an election under load: a new leader
discards what the old one had not committed) is retried until it commits, and counted: the
figures include the time it cost, and the retries and elections are reported beside them.
Results: bench/results/raft-loopback.json, and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from pipeorch.local.cluster import LOOPBACK_TIMING, LocalCluster, free_ports, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, results: dict[str, Any]) -> Path:
    """``results`` as indented JSON in ``bench/results/<name>``; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def applied_truncations(cluster: LocalCluster) -> int:
    """Applied entries truncated, summed over every replica of ``cluster``; each must run and
    answer, at one revision. Anything but 0 is a Raft safety bug (see raft/guard.py)."""
    views = cluster.wait_converged(timeout=60)
    if missing := sorted(set(cluster.replicas) - set(views)):
        raise RuntimeError(f"cannot read the truncation counter of {missing}: not running")
    return sum(int(v["applied_truncations"]) for v in views.values())


def truncation_status(truncations: int) -> int:
    """A benchmark's exit status: 1, and said on stderr, if any applied entry was truncated."""
    if truncations:
        print(f"FAILED: {truncations} applied Raft entries truncated (must be 0)", file=sys.stderr)
        return 1
    return 0


class Replica:
    """A bench/raft_replica.py process."""

    def __init__(self, node_id: str, settings: dict[str, Any]) -> None:
        self.node_id = node_id
        self.settings = settings
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        log = open(Path(self.settings["data_dir"]) / "replica.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.raft_replica", json.dumps(self.settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )

    def send(self, op: str, **args: Any) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError(f"{self.node_id} is not running")
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError(f"{self.node_id} is not running")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.node_id} exited (see its replica.log)")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.receive()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


class RaftGroup:
    def __init__(self, workdir: Path, raft: dict[str, Any], password: str | None = None) -> None:
        ports = free_ports(3)
        members = {f"cp-{i}": f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        self.replicas = {}
        for node_id in members:
            data_dir = workdir / node_id
            data_dir.mkdir(parents=True)
            settings = {
                "node_id": node_id,
                "members": members,
                "data_dir": str(data_dir),
                "raft": raft,
                "log_level": "WARNING",
            }
            if password is not None:
                settings["raft_password"] = password
            self.replicas[node_id] = Replica(node_id, settings)

    def __enter__(self) -> RaftGroup:
        for replica in self.replicas.values():
            replica.start()
        self.leader()
        return self

    def __exit__(self, *exc: object) -> None:
        for replica in self.replicas.values():
            replica.stop()

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.proc is not None]

    def leader(self, timeout: float = 30) -> str:
        def agreed() -> str | None:
            views = {r.node_id: r.ask("status") for r in self.live()}
            leaders = {v["leader"] for v in views.values()}
            if len(leaders) == 1 and None not in leaders:
                (leader,) = leaders
                if views.get(leader, {}).get("state") == "leader":
                    return str(leader)
            return None

        return wait_until(agreed, timeout, interval=0.05, what="leader")

    def truncations(self) -> int:
        return sum(r.ask("status")["applied_truncations"] for r in self.live())

    def term(self) -> int:
        return int(max(r.ask("status")["term"] for r in self.live()))

    def stale_neutralised(self) -> int:
        return sum(r.ask("status")["stale_appends_neutralised"] for r in self.live())


def bench_latency_and_throughput(
    workdir: Path, batching: str, quick: bool, password: str | None = None
) -> dict[str, Any]:
    """With ``password``, the replicas encrypt their Raft traffic, as the chart's always do."""
    raft = {**LOOPBACK_TIMING, "batching": batching}
    lone = 40 if batching == "pysyncobj" else (200 if quick else 1000)
    pipelined = 20_000 if quick else 100_000
    name = f"lat-{batching}" + ("-encrypted" if password else "")
    with RaftGroup(workdir / name, raft, password) as group:
        retried: Counter[str] = Counter()

        def timed(node_id: str, op: str, **args: Any) -> dict[str, Any]:
            """Timed writes through ``node_id``; the writes it had to retry are counted."""
            reply = group.replicas[node_id].ask(op, **args)
            retried.update(reply["retry_reasons"])
            return reply

        leader = group.leader()
        follower = next(n for n in group.replicas if n != leader)
        group.replicas[leader].ask("latency", n=20)  # warm up connections and code paths
        term = group.term()
        from_leader = timed(leader, "latency", n=lone)["samples"]
        from_follower = timed(follower, "latency", n=lone)["samples"]
        result: dict[str, Any] = {
            "batching": batching,
            "encrypted": password is not None,
            "leader_p50_ms": pct(from_leader, 0.5) * 1e3,
            "leader_p99_ms": pct(from_leader, 0.99) * 1e3,
            "follower_p50_ms": pct(from_follower, 0.5) * 1e3,
            "follower_p99_ms": pct(from_follower, 0.99) * 1e3,
            "lone_writes": lone,
        }
        if batching == "group":
            t = timed(leader, "throughput", n=pipelined, window=5000)
            result["pipelined_writes_per_s_leader"] = t["writes"] / t["seconds"]
            t = timed(follower, "throughput", n=pipelined // 2, window=5000)
            result["pipelined_writes_per_s_follower"] = t["writes"] / t["seconds"]
        # Elections during the timed writes: "leader" and "follower" above name the roles at
        # the start; after an election they may have changed.
        result["elections"] = group.term() - term
        result["writes_retried"] = sum(retried.values())
        result["retry_reasons"] = dict(retried)
        result["applied_truncations"] = group.truncations()
        result["stale_appends_neutralised"] = group.stale_neutralised()
    return result


def bench_failover(workdir: Path, kills: int) -> dict[str, Any]:
    """Default timing: what a user gets without tuning for loopback."""
    samples = []
    with RaftGroup(workdir / "failover", {}) as group:
        for _ in range(kills):
            leader = group.leader()
            survivors = [r for r in group.replicas.values() if r.node_id != leader and r.proc]
            # Steady state: every replica connected to both peers (a restarted replica's links
            # come back within one redial interval).
            wait_until(
                lambda: all(r.ask("status")["peers_connected"] == 2 for r in group.live()),
                10,
                what="all Raft links up",
            )
            group.replicas[leader].ask("latency", n=5)
            killed_at = time.monotonic()
            group.replicas[leader].kill()
            # Both survivors write until one commits; the earlier success counts.
            for r in survivors:
                r.send("first_commit", timeout=20)
            done = [r.receive()["committed_at"] for r in survivors]
            first = min(t for t in done if t is not None)
            samples.append(first - killed_at)
            group.replicas[leader].start()
            wait_until(
                lambda n=leader: group.replicas[n].ask("status")["caught_up"],
                30,
                what=f"{leader} caught up",
            )
        truncations = group.truncations()
    return {
        "kills": kills,
        "p50_s": pct(samples, 0.5),
        "p99_s": pct(samples, 0.99),
        "max_s": max(samples),
        "samples_s": samples,
        "applied_truncations": truncations,
    }


def bench_grpc_heartbeat(workdir: Path, n: int) -> dict[str, Any]:
    with LocalCluster(workdir / "grpc", log_level="WARNING") as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        out: dict[str, Any] = {}
        for role, node_id in (("leader", leader), ("follower", follower)):
            with grpc.insecure_channel(cluster.replicas[node_id].grpc) as channel:
                stub = pb_grpc.WorkerServiceStub(channel)
                stub.Register(
                    pb.RegisterRequest(
                        worker_id="bench", region="aws", heartbeat_interval_seconds=60
                    )
                )
                samples = []
                for _ in range(n):
                    start = time.perf_counter()
                    stub.Heartbeat(pb.HeartbeatRequest(worker_id="bench"), timeout=5)
                    samples.append(time.perf_counter() - start)
            out[f"{role}_p50_ms"] = pct(samples, 0.5) * 1e3
            out[f"{role}_p99_ms"] = pct(samples, 0.99) * 1e3
        out["applied_truncations"] = applied_truncations(cluster)
    return out


def table(results: dict[str, Any]) -> str:
    rows = []
    for lat in results["commit_latency"]:
        b = lat["batching"] + (", encrypted" if lat.get("encrypted") else "")
        rows.append(
            (
                f"lone write, leader ({b})",
                f"p50 {lat['leader_p50_ms']:.2f} ms",
                f"p99 {lat['leader_p99_ms']:.2f} ms",
            )
        )
        rows.append(
            (
                f"lone write, follower ({b})",
                f"p50 {lat['follower_p50_ms']:.2f} ms",
                f"p99 {lat['follower_p99_ms']:.2f} ms",
            )
        )
        if "pipelined_writes_per_s_leader" in lat:
            rows.append(
                (
                    f"pipelined writes/s ({b})",
                    f"leader {lat['pipelined_writes_per_s_leader']:,.0f}",
                    f"follower {lat['pipelined_writes_per_s_follower']:,.0f}",
                )
            )
    f = results["failover"]
    rows.append(
        (
            f"leader kill -> first commit ({f['kills']} kills)",
            f"p50 {f['p50_s']:.2f} s",
            f"p99 {f['p99_s']:.2f} s",
        )
    )
    g = results["grpc_heartbeat"]
    rows.append(
        (
            "Heartbeat RPC via leader",
            f"p50 {g['leader_p50_ms']:.2f} ms",
            f"p99 {g['leader_p99_ms']:.2f} ms",
        )
    )
    rows.append(
        (
            "Heartbeat RPC via follower",
            f"p50 {g['follower_p50_ms']:.2f} ms",
            f"p99 {g['follower_p99_ms']:.2f} ms",
        )
    )
    rows.append(
        (
            "timed writes retried (not committed)",
            str(results["writes_retried"]),
            f"elections during them: {results['elections']}",
        )
    )
    rows.append(("applied-entry truncations (all runs)", str(results["applied_truncations"]), ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'benchmark':<{width}}  {'':<22}  ", "-" * (width + 50)]
    lines += [f"{a:<{width}}  {b:<22}  {c}" for a, b, c in rows]
    return "\n".join(lines)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--kills", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeorch-bench-") as tmp:
        workdir = Path(tmp)
        results: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "commit_latency": [
                bench_latency_and_throughput(workdir, "group", args.quick),
                bench_latency_and_throughput(
                    workdir, "group", args.quick, password=secrets.token_urlsafe(24)
                ),
                bench_latency_and_throughput(workdir, "pysyncobj", args.quick),
            ],
            "failover": bench_failover(workdir, 3 if args.quick else args.kills),
            "grpc_heartbeat": bench_grpc_heartbeat(workdir, 100 if args.quick else 500),
        }
    results["writes_retried"] = sum(r["writes_retried"] for r in results["commit_latency"])
    results["elections"] = sum(r["elections"] for r in results["commit_latency"])
    results["applied_truncations"] = (
        sum(r["applied_truncations"] for r in results["commit_latency"])
        + results["failover"]["applied_truncations"]
        + results["grpc_heartbeat"]["applied_truncations"]
    )
    path = write_results("raft-loopback.json", results)
    print(table(results))
    print(f"\nresults written to {path}")
    return truncation_status(results["applied_truncations"])


if __name__ == "__main__":
    sys.exit(main())
