"""`pipeorch local up`: three regions' control plane, workers and MinIO as local processes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pipeorch import console
from pipeorch.local.cluster import LocalCluster
from pipeorch.local.processes import wait_until

#: Replica regions, and workers per region, of the default local layout.
REGIONS = ("aws", "gcp", "azure")
WORKERS = {"aws": 2, "gcp": 1, "azure": 1}
STORE_REGION = "aws"


def workers_online(cluster: LocalCluster, expected: int) -> dict[str, Any] | None:
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


def where_to_look(cluster: LocalCluster, env_file: Path, out: TextIO) -> None:
    leader = cluster.wait_for_leader()
    http = cluster.replicas[leader].http
    out.write(
        f"\nLook at:  http://{http}/raft   http://{http}/cluster   http://{http}/metrics\n"
        f"          http://{http}/pipelines   (any replica serves every endpoint)\n"
    )
    if cluster.store is not None:
        out.write(
            f"          MinIO console http://{cluster.store.console} (credentials in {env_file})\n"
        )
    out.write(
        f"Client:   source {env_file}; pipeorch get tasks\n"
        f"Try:      kill -9 the leader ({leader}, pid {_pid(cluster, leader)}) and watch /raft\n"
    )


def _pid(cluster: LocalCluster, node_id: str) -> int | None:
    popen = cluster.replicas[node_id].popen
    return popen.pid if popen else None


def write_env(cluster: LocalCluster, path: Path) -> None:
    """Client settings for this system: replicas, and the store (readable by the owner only)."""
    lines = ["export PIPEORCH_CONTROL_PLANE=" + ",".join(r.grpc for r in cluster.replicas.values())]
    if cluster.store is not None:
        lines += [
            f"export PIPEORCH_STORE_ENDPOINT={cluster.store.address}",
            f"export PIPEORCH_STORE_ACCESS_KEY={cluster.store.access_key}",
            f"export PIPEORCH_STORE_SECRET_KEY={cluster.store.secret_key}",
            f"export PIPEORCH_STORE_BUCKET={cluster.store.bucket}",
        ]
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")


def run_pipeline(cluster: LocalCluster, manifest: Path, out: TextIO) -> int:
    client = console.Client([r.grpc for r in cluster.replicas.values()])
    try:
        out.write(f"\nrunning {manifest}\n")
        code = console.submit(client, manifest, wait=True, out=out)
        name = manifest_name(manifest)
        out.write("\n")
        console.describe(client, name, out)
        if cluster.store is not None:
            show_text_outputs(client, cluster, name, out)
        return code
    finally:
        client.close()


def show_text_outputs(
    client: console.Client, cluster: LocalCluster, name: str, out: TextIO
) -> None:
    """Print the last step's small text outputs (the report, typically)."""
    from pipeorch.v1 import pipeorch_pb2 as pb
    from pipeorch_worker.store import ArtifactStore, StorageUnavailable

    store = cluster.store
    assert store is not None
    artifacts = ArtifactStore(store.address, store.access_key, store.secret_key, store.bucket)
    status = client.call(lambda s, t: s.GetPipeline(pb.GetPipelineRequest(name=name), timeout=t))
    if not status.tasks:
        return
    for output in status.tasks[-1].outputs:
        if output.size_bytes > 4096 or not output.name.endswith((".md", ".txt", ".csv", ".json")):
            continue
        try:
            text = artifacts.get_bytes(output.key).decode()
        except (StorageUnavailable, UnicodeDecodeError):
            continue
        out.write(f"\n--- {status.tasks[-1].step}/{output.name} ---\n{text.rstrip()}\n")


def manifest_name(manifest: Path) -> str:
    from pipeorch.core.spec import parse_pipeline

    return parse_pipeline(manifest.read_text()).name


def up(
    workdir: Path,
    out: TextIO,
    duration: float | None = None,
    run: Path | None = None,
    code_path: list[Path] | None = None,
    with_store: bool = True,
) -> int:
    """Start everything, optionally run a pipeline, and stay up until Ctrl-C (or
    ``duration`` seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(
        workdir,
        regions=list(REGIONS),
        store_region=STORE_REGION if with_store else None,
        code_path=code_path or _default_code_path(),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = f", MinIO in {STORE_REGION}" if with_store else ""
    out.write(f"starting 3 control-plane replicas ({', '.join(REGIONS)}){store} in {workdir}\n")
    code = 0
    try:
        started = time.monotonic()
        cluster.start()
        for region, count in WORKERS.items():
            for i in range(count):
                cluster.add_worker(region, worker_id=f"{region}-w{i + 1}")
        wait_until(lambda: workers_online(cluster, sum(WORKERS.values())), 30, what="workers")
        env_file = workdir / "env"
        write_env(cluster, env_file)
        out.write(f"up in {time.monotonic() - started:.1f}s\n")
        describe(cluster, out)
        if run is not None:
            code = run_pipeline(cluster, run, out)
        where_to_look(cluster, env_file, out)
        out.write("\nPress Ctrl-C to stop everything.\n")
        out.flush()
        stop.wait(duration)
    finally:
        out.write("stopping...\n")
        with contextlib.suppress(Exception):
            cluster.stop()
    return code


def _default_code_path() -> list[Path]:
    examples = Path(os.environ.get("PIPEORCH_EXAMPLES", Path.cwd() / "examples"))
    return [examples] if examples.is_dir() else []
