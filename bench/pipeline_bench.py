"""Pipeline benchmarks on loopback: 3 replicas, 2 workers, a real MinIO.

(A) a chain of dependent no-op steps: seconds per step;
(B) a fan-out of independent no-op steps: steps per second;
(C) submit-and-wait of a one-step pipeline: p50/p99 round trip;
and the scheduling overhead of every task (ready -> a worker holding it) from the time the
replicated state records it ready and the time its worker reports receiving it. Every
replica's count of truncated applied entries is read at the end; it must be zero.
Results: bench/results/pipelines-loopback.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import compare
from bench.raft_bench import applied_truncations, pct, truncation_status, write_results
from pipeorch.console import Client
from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.local.up import workers_online
from pipeorch.v1 import pipeorch_pb2 as pb

NOOP = "bench_steps:noop"
STEPS_MODULE = "def noop(ctx):\n    pass\n"


def manifest(name: str, steps: list[dict[str, Any]], max_parallel: int | None = None) -> str:
    spec: dict[str, Any] = {"steps": steps}
    if max_parallel:
        spec["maxParallel"] = max_parallel
    return json.dumps(
        {
            "apiVersion": "pipeorch.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def run(client: Client, text: str, name: str, timeout: float) -> pb.PipelineStatus:
    start = time.perf_counter()
    # Submit and wait in one call, as a client that only wants the outcome would.
    request = pb.SubmitPipelineRequest(manifest=text, wait_seconds=timeout)
    status = client.call(lambda s, t: s.SubmitPipeline(request, timeout=t + timeout)).pipeline
    if status.phase != "Succeeded":
        failed = [
            (t.step, t.message, t.log_tail[-300:]) for t in status.tasks if t.phase == "Failed"
        ]
        raise RuntimeError(f"{name} {status.phase}: {status.message}: {failed}")
    status.finished_at = time.perf_counter() - start  # reuse the field for wall time
    return status


def replicated_commands(cluster: LocalCluster) -> float:
    """Commands committed so far: each replica counts those it proposed (its group commit's
    batch-size histogram), so the total is their sum."""
    total = 0.0
    for replica in cluster.replicas.values():
        text = httpx.get(f"http://{replica.http}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("raft_commit_batch_commands_sum "):
                total += float(line.split()[1])
    return total


#: Runs of the chain and of the fan-out; the median of each is reported.
REPEATS = 3


def median_run(runs: list[pb.PipelineStatus]) -> pb.PipelineStatus:
    return sorted(runs, key=lambda status: status.finished_at)[len(runs) // 2]


def warm(cluster: LocalCluster, slots: int) -> bool:
    return all(
        httpx.get(f"http://{w.http}/healthz", timeout=5).json()["warm_step_hosts"] >= slots
        for w in cluster.workers.values()
    )


def cluster_cpu_seconds(cluster: LocalCluster) -> float:
    """CPU time (user + system) used so far by the replicas, the workers and their children
    (the step interpreters), from /proc."""
    roots = {str(p.popen.pid) for p in (*cluster.replicas.values(), *cluster.workers.values())}
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parent[entry] = fields[1]
        cpu[entry] = int(fields[11]) + int(fields[12])
    ours = 0
    for pid, ticks in cpu.items():
        node: str | None = pid
        while node is not None and node not in roots and node != "1":
            node = parent.get(node)
        if node in roots:
            ours += ticks
    return ours / os.sysconf("SC_CLK_TCK")


def overheads(status: pb.PipelineStatus) -> list[float]:
    """Ready to a worker holding the task: the replicated state's ready time to the time the
    worker reported receiving it (one clock on loopback), the commit and the delivery included."""
    return [t.received_at - t.ready_at for t in status.tasks if t.received_at and t.ready_at]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chain", type=int, default=50)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--roundtrips", type=int, default=30)
    # A slot of a worker waits on the network for most of a no-op step's life; 16 per worker
    # keeps both workers busy (the peers pipeline tasks to a worker too: Celery's prefetch,
    # Dask's and Ray's worker queues).
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeorch-bench-") as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        (code / "bench_steps.py").write_text(STEPS_MODULE)
        cluster = LocalCluster(
            Path(tmp) / "cluster",
            regions=["aws", "gcp", "azure"],
            store_region="aws",
            code_path=[code],
            log_level="WARNING",
        )
        with cluster:
            for i in range(2):
                cluster.add_worker("aws", worker_id=f"aws-w{i}", slots=args.slots)
            # Measure steady state: both workers registered, their step interpreters started.
            wait_until(lambda: workers_online(cluster, 2), 60, what="workers online")
            wait_until(lambda: warm(cluster, args.slots), 120, what="warm step hosts")
            client = Client([r.grpc for r in cluster.replicas.values()])
            run(client, manifest("warm-up", [{"name": "one", "run": NOOP}]), "warm-up", 60)
            chain = [{"name": "s0", "run": NOOP}] + [
                {"name": f"s{i}", "run": NOOP, "dependsOn": [f"s{i - 1}"]}
                for i in range(1, args.chain)
            ]
            fan = [{"name": f"f{i}", "run": NOOP} for i in range(args.fanout)]
            # The median of REPEATS runs of each, as for the peers: one run is at the mercy of
            # whatever else the machine does meanwhile.
            chains = [
                run(client, manifest(f"chain-{i}", chain), f"chain-{i}", 600)
                for i in range(REPEATS)
            ]
            fans, commands_each, cpu_each = [], [], []
            for i in range(REPEATS):
                before, cpu_before = replicated_commands(cluster), cluster_cpu_seconds(cluster)
                fans.append(run(client, manifest(f"fanout-{i}", fan), f"fanout-{i}", 1800))
                commands_each.append(replicated_commands(cluster) - before)
                cpu_each.append(cluster_cpu_seconds(cluster) - cpu_before)
            a = median_run(chains)
            b = median_run(fans)
            commands = commands_each[fans.index(b)]
            cpu = cpu_each[fans.index(b)]
            trips = [
                run(client, manifest(f"rt{i}", [{"name": "one", "run": NOOP}]), f"rt{i}", 60)
                for i in range(args.roundtrips)
            ]
            client.close()
            truncations = applied_truncations(cluster)
    # Only where a slot is free: in the fan-out, tasks queue for slots (waiting, not overhead).
    sched = [x for c in chains for x in overheads(c)] + [x for t in trips for x in overheads(t)]
    round_trips = [t.finished_at for t in trips]
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "workers": 2,
        "slots_per_worker": args.slots,
        "chain_steps": args.chain,
        "chain_seconds_per_step": a.finished_at / args.chain,
        "fanout_steps": args.fanout,
        "fanout_steps_per_second": args.fanout / b.finished_at,
        # Ready -> Scheduled -> Running -> Succeeded: three replicated transitions a step.
        "fanout_task_transitions_per_second": 3 * args.fanout / b.finished_at,
        "fanout_replicated_commands_per_second": commands / b.finished_at,
        # Summed over the three replicas, the two workers and their step interpreters.
        "fanout_cpu_ms_per_step": cpu / args.fanout * 1e3,
        "roundtrip_p50_ms": pct(round_trips, 0.5) * 1e3,
        "roundtrip_p99_ms": pct(round_trips, 0.99) * 1e3,
        "scheduling_overhead_p50_ms": pct(sched, 0.5) * 1e3,
        "scheduling_overhead_p99_ms": pct(sched, 0.99) * 1e3,
        "applied_truncations": truncations,
    }
    path = write_results("pipelines-loopback.json", results)
    r = results
    rows = [
        (
            f"(A) chain of {args.chain} no-op steps",
            f"{r['chain_seconds_per_step'] * 1e3:.1f} ms/step",
        ),
        (
            f"(B) fan-out of {args.fanout} no-op steps",
            f"{r['fanout_steps_per_second']:.0f} steps/s",
        ),
        (
            "    replicated on 3 nodes",
            f"{r['fanout_task_transitions_per_second']:.0f} task transitions/s, "
            f"{r['fanout_replicated_commands_per_second']:.0f} commands/s",
        ),
        (
            "    CPU, all processes",
            f"{r['fanout_cpu_ms_per_step']:.2f} ms per step",
        ),
        (
            "(C) submit-and-wait, one step",
            f"p50 {r['roundtrip_p50_ms']:.1f} ms, p99 {r['roundtrip_p99_ms']:.1f} ms",
        ),
        (
            "scheduling overhead (ready -> on a worker)",
            f"p50 {r['scheduling_overhead_p50_ms']:.1f} ms, "
            f"p99 {r['scheduling_overhead_p99_ms']:.1f} ms",
        ),
        ("applied-entry truncations (every replica)", str(r["applied_truncations"])),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"\nresults written to {path}")
    print()
    print(compare.table())
    return truncation_status(truncations)


if __name__ == "__main__":
    raise SystemExit(main())
