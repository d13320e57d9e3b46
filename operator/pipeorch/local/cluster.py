"""Run a control plane and workers as real processes on this machine.

Used by the integration tests, the benchmarks and the local mode. Every replica and worker is a
separate ``pipeorch`` process listening on loopback ports chosen here; logs go to files in the
cluster's work directory.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# free_ports and wait_until are imported from here by tests and benchmarks.
from pipeorch.local.processes import Proc, free_ports, wait_until
from pipeorch.local.tools import find as find_tool

#: Raft timing for loopback: elections in well under a second.
LOOPBACK_TIMING = {"min_timeout": 0.4, "max_timeout": 0.8, "append_entries_period": 0.05}


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


class LocalCluster:
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
    ) -> None:
        """``store_region``: also run a MinIO server (in that region) and let workers run steps;
        ``code_path``: directories where steps' ``run:`` callables are found."""
        self.workdir = workdir
        self.code_path = code_path or []
        self.store = self._object_store(store_region) if store_region else None
        self.timing = timing or LOOPBACK_TIMING
        self.log_level = log_level
        regions = regions or ["local"] * replicas
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
        for replica in self.replicas.values():
            replica.argv = self._replica_argv(replica)
            if self.store is not None:
                replica.argv += ["--store-endpoint", self.store.address]
        self.workers: dict[str, Worker] = {}
        self._http = httpx.Client(timeout=2.0)

    # ---- processes ------------------------------------------------------------------------

    def _replica_argv(self, replica: Replica) -> list[str]:
        argv = [sys.executable, "-m", "pipeorch.cli", "controlplane", "--node-id", replica.node_id]
        for other in self.replicas.values():
            argv += ["--member", f"{other.node_id}={other.raft}"]
        argv += [
            "--region", replica.region,
            "--grpc", replica.grpc,
            "--http", replica.http,
            "--data-dir", str(self.workdir / replica.node_id),
            "--raft-min-timeout", str(self.timing["min_timeout"]),
            "--raft-max-timeout", str(self.timing["max_timeout"]),
            "--raft-heartbeat", str(self.timing["append_entries_period"]),
            "--log-level", self.log_level,
        ]  # fmt: skip
        return argv

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
        if self.store is not None:
            self.start_store()
        for replica in self.replicas.values():
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
        """Start a worker; ``replicas`` orders the control-plane replicas it talks to."""
        name = worker_id or f"w{len(self.workers)}-{region}"
        (port,) = free_ports(1)
        order = replicas or list(self.replicas)
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
                "--store-endpoint", self.store.address,
                "--store-bucket", self.store.bucket,
                "--store-region", self.store.region,
                "--work-dir", str(self.workdir / f"worker-{name}" / "work"),
            ]  # fmt: skip
            for path in self.code_path:
                worker.argv += ["--code-path", str(path)]
            worker.env = self.store.worker_env
        for node_id in order:
            worker.argv += ["--control-plane", self.replicas[node_id].grpc]
        self.workers[name] = worker
        worker.start()
        return worker

    def stop(self) -> None:
        for proc in [*self.workers.values(), *self.replicas.values()]:
            proc.kill(signal.SIGTERM)
        if self.store is not None:
            self.store.kill(signal.SIGTERM)
        self._http.close()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- views ----------------------------------------------------------------------------

    def get(self, node_id: str, path: str) -> Any:
        response = self._http.get(f"http://{self.replicas[node_id].http}{path}")
        response.raise_for_status()
        return response.json()

    def raft(self, node_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(node_id, "/raft")
        return result

    def live(self) -> list[str]:
        return [node_id for node_id, r in self.replicas.items() if r.running]

    def views(self) -> dict[str, dict[str, Any]]:
        """The /raft view of every live replica that answers."""
        out = {}
        for node_id in self.live():
            with contextlib.suppress(httpx.HTTPError):
                out[node_id] = self.raft(node_id)
        return out

    def leader(self) -> str | None:
        """The leader that every live replica names (all of them answering), if it leads."""
        views = self.views()
        if len(views) != len(self.live()):
            return None  # a replica still starting: callers may talk to it next
        leaders = {v["leader"] for v in views.values()}
        if len(leaders) != 1 or None in leaders:
            return None
        (leader,) = leaders
        if leader not in views or views[leader]["state"] != "leader":
            return None
        return str(leader)

    def wait_for_leader(self, timeout: float = 20.0) -> str:
        return wait_until(self.leader, timeout, what="a leader all live replicas agree on")

    def followers(self) -> list[str]:
        leader = self.wait_for_leader()
        return [node_id for node_id in self.live() if node_id != leader]

    def wait_converged(self, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """Wait until every live replica applied the same revision; return their views."""

        def converged() -> dict[str, dict[str, Any]] | None:
            views = self.views()
            if len(views) != len(self.live()):
                return None
            if len({(v["revision"], v["applied_index"]) for v in views.values()}) != 1:
                return None
            return views

        return wait_until(converged, timeout, what="replicas converged on one revision")

    def dump_logs(self, lines: int = 60) -> None:
        procs: list[Proc] = [*self.replicas.values(), *self.workers.values()]
        if self.store is not None:
            procs.append(self.store)
        for proc in procs:
            sys.stderr.write(f"---- {proc.name} ----\n{proc.log_tail(lines)}\n")

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.dump_logs()
            raise
