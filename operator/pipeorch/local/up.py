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
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pipeorch import console
from pipeorch.core.regions import InvalidRegions, Regions, parse_regions
from pipeorch.errors import ConfigError
from pipeorch.local import statefile
from pipeorch.local.cluster import LocalCluster
from pipeorch.local.processes import Proc, wait_until
from pipeorch.local.rtt import format_matrix
from pipeorch.local.running import RunningSystem
from pipeorch.local.statefile import GatewayRecord, Kind, ProcessRecord, SystemState

#: Requests timed per directed link when the gateway's round trips are measured at start.
RTT_SAMPLES = 10


def regions_text(path: Path | None) -> str:
    """The CloudRegion documents at ``path``, or the packaged default layout's."""
    if path is None:
        default = importlib.resources.files("pipeorch.local").joinpath("default-regions.yaml")
        return default.read_text()
    try:
        return path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read regions file {path}: {e}") from e


def load_regions(path: Path | None) -> Regions:
    """The CloudRegion file at ``path``, or the packaged default layout."""
    try:
        return parse_regions(regions_text(path))
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
    flag = statefile.workdir_flag(cluster.workdir)
    out.write(
        f"Client:   source {env_file}; pipeorch get tasks\n"
        f"Faults:   pipeorch local kill-leader{flag} (now {leader}), then watch /raft; "
        "kill-worker REGION,\n"
        "          partition REGION [--for SECONDS], heal, latency A B MS, restart NAME, status\n"
    )


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


def run_pipeline(
    cluster: LocalCluster, manifest: Path, out: TextIO, stop: threading.Event | None = None
) -> int:
    client = console.Client([r.grpc for r in cluster.replicas.values()])
    try:
        out.write(f"\nrunning {manifest}\n")
        code = console.submit(client, manifest, wait=True, out=out, stop=stop)
        if stop is not None and stop.is_set():
            return code
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
    detach: bool = False,
    kubeconfig: Path | None = None,
) -> int:
    """Start everything, optionally run a pipeline, and stay up until Ctrl-C (or ``duration``
    seconds, or ``local down``); with ``detach``, return once that is done and leave the system
    running. Returns the pipeline's exit status (0 without one)."""
    layout = load_regions(regions_file)
    state = statefile.claim(workdir, detach, regions_text(regions_file))
    clear_previous_run(workdir)
    cluster = LocalCluster.from_layout(
        # Absolute: workers run steps in directories of their own, where a relative path
        # names another place.
        workdir.resolve(),
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
    leave_running = False
    try:
        code = _bring_up(cluster, layout, state, run, out, stop)
        if detach and not stop.is_set():
            out.write(_detached(workdir))
            leave_running = True
            return code
        out.write("\nPress Ctrl-C to stop everything.\n")
        out.flush()
        stop.wait(duration)
        return code
    finally:
        if not leave_running:
            out.write("stopping...\n")
            _stop(cluster, workdir)


def _bring_up(
    cluster: LocalCluster,
    layout: Regions,
    state: SystemState,
    run: Path | None,
    out: TextIO,
    stop: threading.Event,
) -> int:
    """Start the system, recording each part as it starts; show it; run ``run``."""
    started = time.monotonic()
    cluster.start()
    record(state, cluster)
    workers = start_workers(cluster, layout)
    record(state, cluster)
    wait_until(lambda: workers_online(cluster, workers), 30, what="workers")
    env_file = cluster.workdir / "env"
    write_env(cluster, env_file)
    state.env_file = str(env_file.resolve())
    out.write(f"up in {time.monotonic() - started:.1f}s\n")
    describe(cluster, out)
    if cluster.gateway is not None:
        show_round_trips(cluster, layout, out)
    state.phase = "up"
    record(state, cluster)  # with the proxies the round trips were measured through
    code = run_pipeline(cluster, run, out, stop) if run is not None else 0
    where_to_look(cluster, env_file, out)
    if cluster.kubeconfig is not None:
        out.write(
            f"Kubernetes: the leader runs the operator; KUBECONFIG={cluster.kubeconfig} kubectl "
            "apply -f examples/energy-pipeline.yaml; kubectl get tasks.pipeorch.dev\n"
        )
    return code


def _stop(cluster: LocalCluster, workdir: Path) -> None:
    """Stop what this process started, then whatever ``local restart`` started since."""
    with contextlib.suppress(Exception):
        cluster.stop()
    state = statefile.load(workdir)
    if state is not None:
        with RunningSystem(state) as system:
            system.stop(owner=False)


def record(state: SystemState, cluster: LocalCluster) -> None:
    """Write into the state file every process ``cluster`` runs and its gateway's links."""
    procs: list[tuple[Proc, Kind, str | None, dict[str, str]]] = []
    for r in cluster.replicas.values():
        procs.append((r, "replica", r.region, {"raft": r.raft, "grpc": r.grpc, "http": r.http}))
    for w in cluster.workers.values():
        procs.append((w, "worker", w.region, {"http": w.http}))
    if cluster.store is not None:
        s = cluster.store
        procs.append((s, "store", s.region, {"s3": s.address, "console": s.console}))
    if cluster.gateway is not None:
        procs.append((cluster.gateway.proc, "gateway", None, {"api": cluster.gateway.api_address}))
    state.processes = [
        ProcessRecord.of(proc, kind, region, addresses)
        for proc, kind, region, addresses in procs
        if proc.popen is not None
    ]
    if cluster.gateway is not None:
        state.gateway = GatewayRecord.of(cluster.gateway)
    statefile.save(state)


#: What an earlier run left in a workdir: Raft data, MinIO's data, workers' ids and scratch
#: space, logs, the env file. Nothing else there is touched.
_EARLIER_RUN = re.compile(
    r"cp-\d+(\.log)?|worker-.+|minio-data|minio\.log|toxiproxy\.log|toxiproxy-proxies\.json|env"
)


def clear_previous_run(workdir: Path) -> None:
    """Every ``up`` starts a fresh system: an earlier run's pipelines would otherwise be found
    again (and not run again), and its logs would run on into this one's."""
    for entry in workdir.iterdir():
        if not _EARLIER_RUN.fullmatch(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _detached(workdir: Path) -> str:
    flag = statefile.workdir_flag(workdir)
    return (
        f"\nThe system keeps running (its state: {statefile.path(workdir)}).\n"
        f"  pipeorch local status{flag}    what runs where\n"
        f"  pipeorch local down{flag}      stop everything\n"
    )


def _starting(layout: Regions, with_store: bool, gateway: bool, workdir: Path) -> str:
    replicas = f"{len(layout.names)} control-plane replicas ({', '.join(layout.names)})"
    store = f", MinIO in {layout.store_region}" if with_store else ""
    links = ", latency gateway (toxiproxy)" if gateway else ", no latency between regions"
    return f"starting {replicas}{store}{links} in {workdir}\n"


def _default_code_path() -> list[Path]:
    examples = Path(os.environ.get("PIPEORCH_EXAMPLES", Path.cwd() / "examples"))
    return [examples] if examples.is_dir() else []
