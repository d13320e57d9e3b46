"""`pipeorch local up`: the control plane and workers of three regions as local processes."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pipeorch.local.cluster import LocalCluster, wait_until

#: Replica regions, and workers per region, of the default local layout.
REGIONS = ("aws", "gcp", "azure")
WORKERS = {"aws": 2, "gcp": 1, "azure": 1}


def _workers_online(cluster: LocalCluster, expected: int) -> dict[str, Any] | None:
    view: dict[str, Any] = cluster.get(cluster.wait_for_leader(), "/cluster")
    online = sum(len(s.get("online", [])) for s in view["regions"].values())
    return view if online >= expected else None


def describe(cluster: LocalCluster, out: TextIO) -> None:
    leader = cluster.wait_for_leader()
    out.write(f"\n{'REPLICA':<8} {'REGION':<7} {'RAFT':<10} {'GRPC':<17} HTTP\n")
    for node_id, replica in cluster.replicas.items():
        role = cluster.raft(node_id)["state"]
        out.write(f"{node_id:<8} {replica.region:<7} {role:<10} {replica.grpc:<17} ")
        out.write(f"http://{replica.http}\n")
    view = cluster.get(leader, "/cluster")
    out.write(f"\n{'WORKER':<18} {'REGION':<7} STATUS\n")
    for region, by_status in view["regions"].items():
        for status, workers in by_status.items():
            for w in workers:
                out.write(f"{w['worker_id']:<18} {region:<7} {status}\n")
    http = cluster.replicas[leader].http
    out.write(
        f"\nLook at:  http://{http}/raft   http://{http}/cluster   http://{http}/metrics\n"
        f"          pipeorch cluster --control-plane {cluster.replicas[leader].grpc}\n"
        f"Try:      kill -9 the leader ({leader}, pid {_pid(cluster, leader)}) and watch /raft\n"
    )


def _pid(cluster: LocalCluster, node_id: str) -> int | None:
    popen = cluster.replicas[node_id].popen
    return popen.pid if popen else None


def up(workdir: Path, out: TextIO, duration: float | None = None) -> int:
    """Start everything, describe it, and stay up until Ctrl-C (or ``duration`` seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(workdir, regions=list(REGIONS))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    out.write(f"starting 3 control-plane replicas ({', '.join(REGIONS)}) in {workdir}\n")
    try:
        started = time.monotonic()
        cluster.start()
        for region, count in WORKERS.items():
            for i in range(count):
                cluster.add_worker(region, worker_id=f"{region}-w{i + 1}")
        wait_until(lambda: _workers_online(cluster, sum(WORKERS.values())), 30, what="workers")
        out.write(f"up in {time.monotonic() - started:.1f}s\n")
        describe(cluster, out)
        out.write("\nPress Ctrl-C to stop everything.\n")
        out.flush()
        stop.wait(duration)
    finally:
        out.write("stopping...\n")
        with contextlib.suppress(Exception):
            cluster.stop()
    return 0
