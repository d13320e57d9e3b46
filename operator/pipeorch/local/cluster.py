"""Run a control plane and workers as real processes on this machine.

Used by the integration tests, the benchmarks and the local mode. Every replica and worker is a
separate ``pipeorch`` process listening on loopback ports chosen here; logs go to files in the
cluster's work directory.

Given a regions layout and a latency gateway, every connection that crosses regions goes
through the gateway's proxy for that link: Raft between replicas (the dialing side's
``--dial``), workers to replicas of other regions, and workers and replicas to the object store
when it lives elsewhere. Identities stay the real addresses; only where to dial changes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeorch.core.regions import Regions
from pipeorch.errors import ConfigError
from pipeorch.local.gateway import LatencyGateway

# free_ports and wait_until are imported from here by tests and benchmarks.
from pipeorch.local.processes import Proc, free_ports, wait_until
from pipeorch.local.rtt import Matrix, Targets, measure_matrix
from pipeorch.local.tools import find as find_tool
from pipeorch.local.views import ReplicaViews
from pipeorch.settings import RaftTiming

#: Raft timing for loopback: elections in well under a second.
LOOPBACK_TIMING = {"min_timeout": 0.4, "max_timeout": 0.8, "append_entries_period": 0.05}
#: The timing flags of `pipeorch controlplane`; other RaftTiming fields go by environment.
_TIMING_FLAGS = {
    "min_timeout": "--raft-min-timeout",
    "max_timeout": "--raft-max-timeout",
    "append_entries_period": "--raft-heartbeat",
}
#: The worst round trip RaftTiming's defaults are sized for.
_DEFAULT_TIMING_RTT_MS = 125.0


def wan_timing(worst_rtt_ms: float) -> dict[str, float]:
    """Raft timing for round trips up to ``worst_rtt_ms``: RaftTiming's defaults (sized for
    125 ms), with every timeout stretched in proportion beyond that. The heartbeat period stays:
    it sets how fast a follower notices a lost leader, not how long a message takes."""
    stretch = max(1.0, worst_rtt_ms / _DEFAULT_TIMING_RTT_MS)
    fields = RaftTiming.model_fields
    timing = {"append_entries_period": float(fields["append_entries_period"].default)}
    for name in ("min_timeout", "max_timeout", "connection_timeout", "leader_fallback_timeout"):
        timing[name] = round(float(fields[name].default) * stretch, 3)
    return timing


@dataclass
class Replica(Proc):
    node_id: str = ""
    raft: str = ""
    grpc: str = ""
    http: str = ""
    region: str = "local"


@dataclass
class ObjectStore(Proc):
    """A MinIO server; its credentials are generated per cluster and passed by environment."""

    address: str = ""
    console: str = ""
    access_key: str = ""
    secret_key: str = ""
    bucket: str = "pipeorch"
    region: str = "local"

    @property
    def worker_env(self) -> dict[str, str]:
        return {
            "PIPEORCH_WORKER_STORE_ACCESS_KEY": self.access_key,
            "PIPEORCH_WORKER_STORE_SECRET_KEY": self.secret_key,
        }


@dataclass
class Worker(Proc):
    region: str = "local"
    http: str = ""
    state_dir: Path = Path()


class LocalCluster(ReplicaViews):
    """A Raft control plane of ``replicas`` processes plus any number of workers."""

    def __init__(
        self,
        workdir: Path,
        replicas: int = 3,
        regions: list[str] | None = None,
        timing: dict[str, float] | None = None,
        log_level: str = "INFO",
        store_region: str | None = None,
        code_path: list[Path] | None = None,
        layout: Regions | None = None,
        gateway: bool = False,
        kubeconfig: Path | None = None,
        watch_namespace: str | None = None,
    ) -> None:
        """``regions``: each replica's region; ``store_region``: also run a MinIO server (in
        that region) and let workers run steps; ``code_path``: directories where steps' ``run:``
        callables are found; ``layout``: the CloudRegion set, whose round trips the replicas
        place steps by; ``gateway``: make cross-region traffic take the layout's round trips
        through a LatencyGateway (with Raft timing fit for them); ``kubeconfig``: the
        replicas run the operator (on the leader) against that cluster."""
        regions = regions or ["local"] * replicas
        if gateway and layout is None:
            raise ConfigError("a latency gateway needs a regions layout")
        unknown = sorted(set(regions) - set(layout.names)) if layout else []
        if unknown:
            raise ConfigError(f"replica regions {unknown} are not in the regions layout")
        self.workdir = workdir
        self.code_path = code_path or []
        self.layout = layout
        self.gateway = LatencyGateway(layout, workdir) if gateway and layout else None
        self.store = self._object_store(store_region) if store_region else None
        self.timing = timing or (self._gateway_timing() if self.gateway else LOOPBACK_TIMING)
        self.log_level = log_level
        self.kubeconfig = kubeconfig.resolve() if kubeconfig else None
        self.watch_namespace = watch_namespace
        ports = free_ports(3 * replicas)
        self.replicas: dict[str, Replica] = {}
        for i in range(replicas):
            node_id = f"cp-{i}"
            raft, grpc, http = (f"127.0.0.1:{p}" for p in ports[3 * i : 3 * i + 3])
            self.replicas[node_id] = Replica(
                name=node_id,
                argv=[],
                log_path=workdir / f"{node_id}.log",
                node_id=node_id,
                raft=raft,
                grpc=grpc,
                http=http,
                region=regions[i],
            )
        self.workers: dict[str, Worker] = {}
        self._http = httpx.Client(timeout=2.0)

    @classmethod
    def from_layout(
        cls,
        workdir: Path,
        layout: Regions,
        *,
        gateway: bool = True,
        with_store: bool = True,
        **options: Any,
    ) -> LocalCluster:
        """One replica per region of ``layout``, MinIO in its object-store region."""
        return cls(
            workdir,
            replicas=len(layout.names),
            regions=layout.names,
            store_region=layout.store_region if with_store else None,
            layout=layout,
            gateway=gateway,
            **options,
        )

    def _gateway_timing(self) -> dict[str, float]:
        assert self.layout is not None
        slowest = max((self.layout.rtt_ms(*pair) for pair in self.layout.pairs()), default=0.0)
        return wan_timing(slowest)

    # ---- routes ---------------------------------------------------------------------------

    def reach(self, from_region: str, service: str, address: str, region: str) -> str:
        """Where a process in ``from_region`` dials ``address`` (``service``, in ``region``):
        through the gateway across regions, directly otherwise."""
        if self.gateway is None:
            return address
        return self.gateway.proxy(from_region, service, address, region)

    def nearest_replicas(self, region: str) -> list[str]:
        """Replica ids by round trip from ``region``: its own first (file order breaks ties)."""
        if self.layout is None or region not in self.layout.names:
            return list(self.replicas)
        layout = self.layout
        return sorted(self.replicas, key=lambda n: layout.rtt_ms(region, self.replicas[n].region))

    def measure_rtt(self, samples: int = 10) -> Matrix:
        """Median round trip (ms) of every directed link between the replicas' regions,
        measured through the gateway."""
        if self.gateway is None:
            raise ConfigError("no latency gateway to measure")
        targets: Targets = {}
        for node_id, replica in self.replicas.items():
            targets.setdefault(replica.region, (f"{node_id}-http", replica.http))
        return measure_matrix(self.gateway, targets, samples)

    # ---- processes ------------------------------------------------------------------------

    def _replica_argv(self, replica: Replica) -> list[str]:
        argv = [sys.executable, "-m", "pipeorch.cli", "controlplane", "--node-id", replica.node_id]
        for other in self.replicas.values():
            argv += ["--member", f"{other.node_id}={other.raft}"]
            # Only the side that dials uses this; the other side's identity check is unchanged.
            dial = self.reach(replica.region, f"{other.node_id}-raft", other.raft, other.region)
            if dial != other.raft:
                argv += ["--dial", f"{other.node_id}={dial}"]
        argv += [
            "--region", replica.region,
            "--grpc", replica.grpc,
            "--http", replica.http,
            "--data-dir", str(self.workdir / replica.node_id),
            "--log-level", self.log_level,
        ]  # fmt: skip
        for name, value in self.timing.items():
            if name in _TIMING_FLAGS:
                argv += [_TIMING_FLAGS[name], str(value)]
        if self.store is not None:
            argv += ["--store-endpoint", self._store_address(replica.region)]
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        if self.watch_namespace is not None:
            argv += ["--watch-namespace", self.watch_namespace]
        return argv

    def _replica_env(self) -> dict[str, str]:
        env = {
            f"PIPEORCH_RAFT_{name.upper()}": str(value)
            for name, value in self.timing.items()
            if name not in _TIMING_FLAGS
        }
        if self.layout is not None:
            env["PIPEORCH_LATENCY_MS"] = json.dumps(self.layout.rtt_matrix())
            env["PIPEORCH_BANDWIDTH_MBPS"] = json.dumps(self.layout.bandwidth_matrix())
        return env

    def _store_address(self, from_region: str) -> str:
        store = self.store
        assert store is not None
        return self.reach(from_region, "minio", store.address, store.region)

    def _object_store(self, region: str) -> ObjectStore:
        address, console = (f"127.0.0.1:{p}" for p in free_ports(2))
        store = ObjectStore(
            name="minio",
            argv=[],
            log_path=self.workdir / "minio.log",
            address=address,
            console=console,
            access_key="pipeorch-" + secrets.token_hex(4),
            secret_key=secrets.token_urlsafe(24),
            region=region,
        )
        store.argv = [
            str(find_tool("minio")), "server", str(self.workdir / "minio-data"),
            "--address", address, "--console-address", console, "--quiet",
        ]  # fmt: skip
        store.env = {
            "MINIO_ROOT_USER": store.access_key,
            "MINIO_ROOT_PASSWORD": store.secret_key,
            "MINIO_BROWSER_REDIRECT": "off",
        }
        return store

    def start_store(self) -> None:
        store = self.store
        assert store is not None
        store.start()
        live = f"http://{store.address}/minio/health/live"
        wait_until(lambda: self._http.get(live).status_code == 200, 30, what="MinIO live")

    def start(self, wait: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.gateway is not None:
            self.gateway.start()
        if self.store is not None:
            self.start_store()
        for replica in self.replicas.values():
            # Built now: the gateway's proxies exist only once it runs.
            replica.argv = self._replica_argv(replica)
            replica.env = self._replica_env()
            replica.start()
        if wait:
            self.wait_for_leader()

    def kill_replica(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        self.replicas[node_id].kill(sig)

    def restart_replica(self, node_id: str) -> None:
        self.replicas[node_id].kill()
        self.replicas[node_id].start()

    def add_worker(
        self,
        region: str = "local",
        worker_id: str | None = None,
        heartbeat: float = 0.5,
        replicas: list[str] | None = None,
        slots: int = 1,
    ) -> Worker:
        """Start a worker; ``replicas`` orders the control-plane replicas it talks to (by
        default the nearest first)."""
        name = worker_id or f"w{len(self.workers)}-{region}"
        (port,) = free_ports(1)
        order = replicas or self.nearest_replicas(region)
        worker = Worker(
            name=name,
            argv=[],
            log_path=self.workdir / f"worker-{name}.log",
            region=region,
            http=f"127.0.0.1:{port}",
            state_dir=self.workdir / f"worker-{name}",
        )
        worker.argv = [
            sys.executable, "-m", "pipeorch.cli", "worker",
            "--region", region,
            "--heartbeat-interval", str(heartbeat),
            "--http", worker.http,
            "--state-dir", str(worker.state_dir),
            "--log-level", self.log_level,
        ]  # fmt: skip
        if worker_id:
            worker.argv += ["--worker-id", worker_id]
        if self.store is not None:
            worker.argv += [
                "--slots", str(slots),
                "--store-endpoint", self._store_address(region),
                "--store-bucket", self.store.bucket,
                "--store-region", self.store.region,
                "--work-dir", str(self.workdir / f"worker-{name}" / "work"),
            ]  # fmt: skip
            for path in self.code_path:
                worker.argv += ["--code-path", str(path)]
            worker.env = self.store.worker_env
        for node_id in order:
            replica = self.replicas[node_id]
            grpc = self.reach(region, f"{node_id}-grpc", replica.grpc, replica.region)
            worker.argv += ["--control-plane", grpc]
        self.workers[name] = worker
        worker.start()
        return worker

    def stop(self) -> None:
        for proc in [*self.workers.values(), *self.replicas.values()]:
            proc.kill(signal.SIGTERM)
        if self.store is not None:
            self.store.kill(signal.SIGTERM)
        if self.gateway is not None:
            self.gateway.stop()
        self._http.close()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()  # what did start (MinIO, some replicas) must not outlive the failure
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- views (the rest in ReplicaViews) ---------------------------------------------------

    def replica_http(self, node_id: str) -> str:
        return self.replicas[node_id].http

    def live(self) -> list[str]:
        return [node_id for node_id, r in self.replicas.items() if r.running]

    def dump_logs(self, lines: int = 60) -> None:
        procs: list[Proc] = [*self.replicas.values(), *self.workers.values()]
        if self.store is not None:
            procs.append(self.store)
        if self.gateway is not None:
            procs.append(self.gateway.proc)
        for proc in procs:
            sys.stderr.write(f"---- {proc.name} ----\n{proc.log_tail(lines)}\n")

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.dump_logs()
            raise
