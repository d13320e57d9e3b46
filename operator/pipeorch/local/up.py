"""`pipeorch local up`: the regions' control plane, workers, MinIO and latency gateway as local
processes.

The layout comes from a CloudRegion file (by default the one shipped with the package, the same
as examples/regions.yaml): one replica per region, each region's workers, MinIO in the region
that holds the object store, and a toxiproxy gateway that gives every cross-region connection
the configured round trip.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pipeorch import console
from pipeorch.core.regions import InvalidRegions, Regions, parse_regions
from pipeorch.errors import ConfigError
from pipeorch.local.cluster import LocalCluster
from pipeorch.local.processes import wait_until
from pipeorch.local.rtt import format_matrix

#: Requests timed per directed link when the gateway's round trips are measured at start.
RTT_SAMPLES = 10


def load_regions(path: Path | None) -> Regions:
    """The CloudRegion file at ``path``, or the packaged default layout."""
    if path is None:
        text = importlib.resources.files("pipeorch.local").joinpath("default-regions.yaml")
        return parse_regions(text.read_text())
    try:
        return parse_regions(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read regions file {path}: {e}") from e
    except InvalidRegions as e:
        raise ConfigError(f"{path}: {e}") from e


def start_workers(cluster: LocalCluster, layout: Regions) -> int:
    """Each region's workers, named ``<region>-w<n>``; returns how many were started."""
    count = 0
    for region in layout.regions:
        pool = region.spec.workers
        for i in range(pool.replicas):
            cluster.add_worker(region.name, worker_id=f"{region.name}-w{i + 1}", slots=pool.slots)
            count += 1
    return count


def show_round_trips(cluster: LocalCluster, layout: Regions, out: TextIO) -> None:
    """Measure every link through the gateway and print it beside the configured round trip."""
    measured = cluster.measure_rtt(RTT_SAMPLES)
    out.write(
        f"\nround trips through the latency gateway, ms: median of {RTT_SAMPLES} "
        "(configured); inside a region: direct\n"
    )
    out.write(format_matrix(layout.names, measured, layout.rtt_ms) + "\n")


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
    regions_file: Path | None = None,
    gateway: bool = True,
    kubeconfig: Path | None = None,
) -> int:
    """Start everything, optionally run a pipeline, and stay up until Ctrl-C (or
    ``duration`` seconds)."""
    layout = load_regions(regions_file)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster.from_layout(
        workdir,
        layout,
        gateway=gateway,
        with_store=with_store,
        code_path=code_path or _default_code_path(),
        kubeconfig=kubeconfig,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    out.write(_starting(layout, with_store, gateway, workdir))
    code = 0
    try:
        started = time.monotonic()
        cluster.start()
        workers = start_workers(cluster, layout)
        wait_until(lambda: workers_online(cluster, workers), 30, what="workers")
        env_file = workdir / "env"
        write_env(cluster, env_file)
        out.write(f"up in {time.monotonic() - started:.1f}s\n")
        describe(cluster, out)
        if cluster.gateway is not None:
            show_round_trips(cluster, layout, out)
        if run is not None:
            code = run_pipeline(cluster, run, out)
        where_to_look(cluster, env_file, out)
        if kubeconfig is not None:
            out.write(
                f"Kubernetes: the leader runs the operator; KUBECONFIG={kubeconfig} kubectl "
                "apply -f examples/energy-pipeline.yaml; kubectl get tasks.pipeorch.dev\n"
            )
        out.write("\nPress Ctrl-C to stop everything.\n")
        out.flush()
        stop.wait(duration)
    finally:
        out.write("stopping...\n")
        with contextlib.suppress(Exception):
            cluster.stop()
    return code


def _starting(layout: Regions, with_store: bool, gateway: bool, workdir: Path) -> str:
    replicas = f"{len(layout.names)} control-plane replicas ({', '.join(layout.names)})"
    store = f", MinIO in {layout.store_region}" if with_store else ""
    links = ", latency gateway (toxiproxy)" if gateway else ", no latency between regions"
    return f"starting {replicas}{store}{links} in {workdir}\n"


def _default_code_path() -> list[Path]:
    examples = Path(os.environ.get("PIPEORCH_EXAMPLES", Path.cwd() / "examples"))
    return [examples] if examples.is_dir() else []
