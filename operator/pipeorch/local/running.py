"""A local system found through its state file: ``local down``, ``local status`` and the
faults act on it, whether its ``up`` runs in the foreground or returned (``--detach``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from pipeorch.core.regions import Regions, parse_regions
from pipeorch.errors import Conflict, InvalidInput
from pipeorch.local import pids, statefile
from pipeorch.local.gateway import LatencyGateway
from pipeorch.local.statefile import ProcessRecord, SystemState
from pipeorch.local.views import ReplicaViews

#: How long a foreground ``up`` asked to stop may take to stop its system itself.
_OWNER_STOP_SECONDS = 30.0


class RunningSystem(ReplicaViews):
    """The processes, replicas and gateway of the system recorded in ``state``."""

    def __init__(self, state: SystemState) -> None:
        self.state = state
        self.workdir = Path(state.workdir)
        self.layout: Regions = parse_regions(state.regions)
        self._http = httpx.Client(timeout=2.0)

    @classmethod
    def find(cls, workdir: Path) -> RunningSystem:
        """The system running in ``workdir``; NotFound when none runs there."""
        return cls(statefile.find(workdir))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RunningSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reload(self) -> None:
        """Read the state file again (another command may have changed it)."""
        self.state = statefile.find(self.workdir)

    # ---- what it is made of ---------------------------------------------------------------

    @property
    def replicas(self) -> dict[str, ProcessRecord]:
        return self.state.named("replica")

    def replica_http(self, node_id: str) -> str:
        return self.replicas[node_id].addresses["http"]

    def live(self) -> list[str]:
        return [name for name, replica in self.replicas.items() if replica.running]

    def workers(self, region: str) -> list[ProcessRecord]:
        return [w for w in self.state.named("worker").values() if w.region == region]

    def process(self, name: str) -> ProcessRecord:
        for proc in self.state.processes:
            if proc.name == name:
                return proc
        known = ", ".join(p.name for p in self.state.processes)
        raise InvalidInput("NAME", f"no process {name!r} in this system: one of {known}")

    def region(self, name: str) -> str:
        """``name`` if the system has that region; InvalidInput naming the known ones."""
        if name not in self.layout.names:
            known = ", ".join(self.layout.names)
            raise InvalidInput("REGION", f"unknown region {name!r}: this system has {known}")
        return name

    def gateway(self) -> LatencyGateway:
        """The latency gateway as recorded; Conflict when the system runs without one."""
        record = self.state.gateway
        if record is None:
            raise Conflict(
                f"the system in {self.workdir} has no latency gateway (it was started with "
                "--no-gateway): partitions and round trips need one"
            )
        return LatencyGateway.attach(
            self.layout,
            self.workdir,
            record.api,
            record.links,
            record.partitioned,
            {(p.a, p.b): (p.rtt_ms, p.jitter_ms) for p in record.latency},
        )

    # ---- stopping ---------------------------------------------------------------------------

    def stop(self, grace: float = 10.0, owner: bool = True) -> list[str]:
        """Stop everything: a foreground ``up`` first (it stops what it started; unless
        ``owner`` is false: that ``up`` is the caller), then every recorded process still
        running (SIGTERM, SIGKILL after ``grace`` seconds). Removes the state. Returns the
        names of processes that would not die (normally none)."""
        state = self.state
        if owner and not state.detached and pids.send(state.owner, signal.SIGTERM):
            deadline = time.monotonic() + _OWNER_STOP_SECONDS
            while pids.is_running(state.owner) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Workers and replicas before the store and the gateway they talk through.
        order = ("worker", "replica", "store", "gateway")
        left = []
        for kind in order:
            procs = {p.proc: p.name for p in state.processes if p.kind == kind}
            left += [procs[p] for p in pids.stop(procs, grace)]
        if not left:
            statefile.release(self.workdir)
        return left


def describe_processes(system: RunningSystem, out: TextIO) -> None:
    """One line per process: what it is, where, whether it runs, and its role."""
    roles = _replica_roles(system)
    workers = _worker_statuses(system)
    out.write(f"{'NAME':<10} {'KIND':<8} {'REGION':<7} {'PID':<8} {'STATE':<8} {'ROLE':<18} ")
    out.write("ADDRESS\n")
    for proc in system.state.processes:
        state = "running" if proc.running else "killed"
        role = roles.get(proc.name) or workers.get(proc.name) or "-"
        out.write(
            f"{proc.name:<10} {proc.kind:<8} {proc.region or '-':<7} {proc.pid:<8} {state:<8} "
            f"{role:<18} {_main_address(proc)}\n"
        )


def _replica_roles(system: RunningSystem) -> dict[str, str]:
    return {n: f"{v['state']} (term {v['term']})" for n, v in system.views().items()}


def _worker_statuses(system: RunningSystem) -> dict[str, str]:
    """Worker statuses as the leader has applied them (none during an election)."""
    leader = system.claimed_leader()
    if leader is None:
        return {}
    try:
        view: dict[str, Any] = system.get(leader, "/cluster")
    except httpx.HTTPError:
        return {}
    return {
        w["worker_id"]: status
        for by_status in view["regions"].values()
        for status, workers in by_status.items()
        for w in workers
    }


def _main_address(proc: ProcessRecord) -> str:
    a = proc.addresses
    if proc.kind == "replica":
        return f"grpc {a['grpc']}  http://{a['http']}"
    if proc.kind == "store":
        return f"s3 {a['s3']}  console http://{a['console']}"
    if proc.kind == "gateway":
        return f"toxiproxy API http://{a['api']}"
    return f"http://{a['http']}" if "http" in a else ""


def describe_gateway(system: RunningSystem, out: TextIO) -> None:
    """Cut regions and the round trips that differ from the regions file."""
    record = system.state.gateway
    if record is None:
        out.write("latency gateway: none (started with --no-gateway)\n")
        return
    cut = ", ".join(record.partitioned) or "none"
    out.write(f"partitioned regions: {cut}\n")
    for pair in record.latency:
        configured = system.layout.rtt_ms(pair.a, pair.b)
        if pair.rtt_ms != configured:
            out.write(
                f"round trip {pair.a} <-> {pair.b}: {pair.rtt_ms:g} ms "
                f"(configured {configured:g} ms)\n"
            )
