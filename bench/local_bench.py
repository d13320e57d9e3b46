"""The local mode across regions: the default layout (aws, gcp, azure) with its latency gateway,
MinIO in aws and the layout's four workers, as `make demo` runs it.

* commit latency of lone writes at the leader, with the leader in each region, against the
  floor: the round trip to its nearest follower (one round trip is what Raft must pay);
* failover at the default round trips: leader SIGKILL to the first committed write through a
  survivor (p50/p99 over the kills);
* the energy pipeline end to end (submitted -> finished) against the sum of its steps' run
  times (started -> finished of each task), with the leader in each region.

Leadership moves by killing the leader (each kill is a failover sample) and restarting it,
until every region has led. Every replica's count of truncated applied entries is read at the
end; it must be zero. Results: bench/results/local-latency.json, and a table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml

from bench.raft_bench import applied_truncations, pct, truncation_status, write_results
from pipeorch.console import Client
from pipeorch.local.cluster import LocalCluster
from pipeorch.local.processes import wait_until
from pipeorch.local.up import load_regions, start_workers, workers_online
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BENCH_WORKER = "bench-writer"


def register(address: str) -> None:
    """The worker the benchmark's writes heartbeat for (it never runs anything: it has no
    process, and a long interval keeps it online between the writes)."""
    with grpc.insecure_channel(address) as channel:
        pb_grpc.WorkerServiceStub(channel).Register(
            pb.RegisterRequest(
                worker_id=BENCH_WORKER, region="aws", heartbeat_interval_seconds=600
            ),
            timeout=10,
        )


def heartbeat(address: str, timeout: float) -> None:
    """One replicated write through the replica at ``address``."""
    with grpc.insecure_channel(address) as channel:
        pb_grpc.WorkerServiceStub(channel).Heartbeat(
            pb.HeartbeatRequest(worker_id=BENCH_WORKER), timeout=timeout
        )


def commit_latency_ms(cluster: LocalCluster, leader: str, writes: int) -> list[float]:
    """Lone writes at the leader, one after the other, on one open channel."""
    with grpc.insecure_channel(cluster.replicas[leader].grpc) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        request = pb.HeartbeatRequest(worker_id=BENCH_WORKER)
        stub.Heartbeat(request, timeout=10)  # connect first: only the writes are timed
        samples = []
        for _ in range(writes):
            started = time.perf_counter()
            stub.Heartbeat(request, timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def steady(cluster: LocalCluster) -> None:
    """Every replica caught up and connected to both peers, as before a real failure."""
    cluster.wait_converged(timeout=60)
    wait_until(
        lambda: all(p["connected"] for v in cluster.views().values() for p in v["peers"]),
        30,
        what="all Raft links up",
    )


def workers_on_leader(cluster: LocalCluster, leader: str) -> bool:
    """Whether every worker talks to ``leader`` (through its own route to it). After a
    failover a worker may go on through a follower, which forwards its writes, for up to its
    leader-search interval: correct, but not the steady state this bench measures."""
    replica = cluster.replicas[leader]
    for worker in cluster.workers.values():
        expected = cluster.reach(worker.region, f"{leader}-grpc", replica.grpc, replica.region)
        if httpx.get(f"http://{worker.http}/healthz", timeout=5).json()["replica"] != expected:
            return False
    return True


def failover_seconds(cluster: LocalCluster, leader: str) -> float:
    """SIGKILL ``leader``; seconds until a write through a survivor commits."""
    survivors = [n for n in cluster.replicas if n != leader]
    committed = threading.Event()
    first: list[float] = []

    def write_until_committed(node_id: str) -> None:
        address = cluster.replicas[node_id].grpc
        while not committed.is_set():
            try:
                heartbeat(address, timeout=1.0)
            except grpc.RpcError:
                continue
            first.append(time.monotonic())
            committed.set()

    killed_at = time.monotonic()
    cluster.kill_replica(leader)
    threads = [threading.Thread(target=write_until_committed, args=(n,)) for n in survivors]
    for thread in threads:
        thread.start()
    if not committed.wait(60):
        raise RuntimeError(f"no write committed within 60 s of killing {leader}")
    for thread in threads:
        thread.join()
    return min(first) - killed_at


def run_energy(client: Client, name: str) -> dict[str, float]:
    """The energy example under ``name``: its end-to-end and summed step times, in seconds."""
    document = yaml.safe_load((EXAMPLES / "energy-pipeline.yaml").read_text())
    document["metadata"]["name"] = name
    manifest = json.dumps(document)
    client.call(
        lambda s, t: s.SubmitPipeline(pb.SubmitPipelineRequest(manifest=manifest), timeout=t)
    )
    request = pb.GetPipelineRequest(name=name, wait_seconds=60, until_finished=True)
    status = client.call(lambda s, t: s.GetPipeline(request, timeout=t + 60))
    if status.phase != "Succeeded":
        raise RuntimeError(f"{name} {status.phase}: {status.message}")
    return {
        "end_to_end_s": status.finished_at - status.submitted_at,
        "steps_sum_s": sum(t.finished_at - t.started_at for t in status.tasks),
        # Where each step ran and when, from the submission: what explains an overhead.
        "steps": [
            {
                "step": t.step,
                "worker": t.worker_id,
                "attempt": t.attempt,
                "ready_s": round(t.ready_at - status.submitted_at, 4),
                "started_s": round(t.started_at - status.submitted_at, 4),
                # When its worker got it: after the commit, and the trip from the leader.
                "received_s": round(t.received_at - status.submitted_at, 4),
                "finished_s": round(t.finished_at - status.submitted_at, 4),
            }
            for t in status.tasks
        ],
    }


def measure_region(
    cluster: LocalCluster, leader: str, measured_rtt: dict[tuple[str, str], float], args: Any
) -> dict[str, Any]:
    layout = cluster.layout
    assert layout is not None
    region = cluster.replicas[leader].region
    nearest = min((r for r in layout.names if r != region), key=lambda r: layout.rtt_ms(region, r))
    samples = commit_latency_ms(cluster, leader, args.writes)
    client = Client([r.grpc for r in cluster.replicas.values()])
    try:
        runs = [run_energy(client, f"energy-{region}-{i}") for i in range(args.pipelines)]
    finally:
        client.close()
    floor = layout.rtt_ms(region, nearest)
    p50 = statistics.median(samples)
    return {
        "leader": leader,
        "nearest_follower_region": nearest,
        "floor_configured_ms": floor,
        "floor_measured_ms": measured_rtt[(region, nearest)],
        "commit_p50_ms": p50,
        "commit_p99_ms": pct(samples, 0.99),
        "ratio_to_floor": p50 / floor,
        "ratio_to_measured_floor": p50 / measured_rtt[(region, nearest)],
        "energy_runs": runs,
        "energy_end_to_end_p50_s": statistics.median(r["end_to_end_s"] for r in runs),
        "energy_steps_sum_p50_s": statistics.median(r["steps_sum_s"] for r in runs),
    }


def bench(workdir: Path, args: Any) -> dict[str, Any]:
    layout = load_regions(None)
    cluster = LocalCluster.from_layout(workdir, layout, code_path=[EXAMPLES], log_level="WARNING")
    with cluster, cluster.logs_on_failure():
        workers = start_workers(cluster, layout)
        wait_until(lambda: workers_online(cluster, workers), 60, what="workers online")
        measured_rtt = cluster.measure_rtt(samples=10)
        register(cluster.replicas[cluster.wait_for_leader()].grpc)
        by_region: dict[str, dict[str, Any]] = {}
        failovers: list[float] = []
        while len(by_region) < len(layout.names) or len(failovers) < args.kills:
            if len(failovers) >= args.max_kills:
                raise RuntimeError(f"{sorted(by_region)} led after {len(failovers)} kills")
            steady(cluster)
            leader = cluster.wait_for_leader()
            region = cluster.replicas[leader].region
            if region not in by_region:
                on_leader = functools.partial(workers_on_leader, cluster, leader)
                wait_until(on_leader, 30, what="workers on leader")
                by_region[region] = measure_region(cluster, leader, measured_rtt, args)
                steady(cluster)
            failovers.append(failover_seconds(cluster, leader))
            cluster.restart_replica(leader)
        steady(cluster)
        truncations = applied_truncations(cluster)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "round_trips_configured_ms": {f"{a}-{b}": layout.rtt_ms(a, b) for a, b in layout.pairs()},
        "round_trips_measured_ms": {f"{a}->{b}": v for (a, b), v in sorted(measured_rtt.items())},
        "leader_in": {r: by_region[r] for r in layout.names},
        "failover": {
            "kills": len(failovers),
            "p50_s": pct(failovers, 0.5),
            "p99_s": pct(failovers, 0.99),
            "max_s": max(failovers),
            "samples_s": failovers,
        },
        "applied_truncations": truncations,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'leader in':<10} {'commit p50':>11} {'p99':>9}  {'floor (nearest follower)':<28} "
        f"{'ratio':>5}   {'energy e2e':>10} {'steps sum':>10} {'overhead':>9}",
        "-" * 104,
    ]
    for region, r in results["leader_in"].items():
        floor = (
            f"{r['floor_configured_ms']:g} ms {r['nearest_follower_region']} "
            f"({r['floor_measured_ms']:.1f} measured)"
        )
        e2e, steps = r["energy_end_to_end_p50_s"], r["energy_steps_sum_p50_s"]
        lines.append(
            f"{region:<10} {r['commit_p50_ms']:>8.1f} ms {r['commit_p99_ms']:>6.1f} ms  "
            f"{floor:<28} {r['ratio_to_floor']:>5.2f}   {e2e:>8.2f} s {steps:>8.2f} s "
            f"{e2e - steps:>7.2f} s"
        )
    f = results["failover"]
    lines += [
        "",
        f"failover, leader SIGKILL -> first commit ({f['kills']} kills): p50 {f['p50_s']:.2f} s, "
        f"p99 {f['p99_s']:.2f} s, max {f['max_s']:.2f} s",
        f"applied-entry truncations: {results['applied_truncations']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=40, help="timed writes per leader region")
    parser.add_argument("--pipelines", type=int, default=3, help="energy runs per leader region")
    parser.add_argument("--kills", type=int, default=12, help="failover samples, at least")
    parser.add_argument("--max-kills", type=int, default=20, help="give up on a region after")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pipeorch-bench-") as tmp:
        results = bench(Path(tmp), args)
    results["bench_seconds"] = time.monotonic() - started
    path = write_results("local-latency.json", results)
    print(table(results))
    print(f"\nresults written to {path} ({results['bench_seconds']:.0f} s)")
    return truncation_status(results["applied_truncations"])


if __name__ == "__main__":
    sys.exit(main())
