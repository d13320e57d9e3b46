"""The state file of a local system: what ``pipeorch local up`` started, for later commands.

``<workdir>/state.json`` records every process (pid and start time, command line, environment,
log, addresses), the latency gateway (its API address, its links, which regions are cut and the
round trips it gives now) and the client env file. ``up`` claims it before starting anything,
so a second ``up`` on the same workdir refuses while the first one's system runs; ``down``
removes it. It holds the store's credentials (in the workers' and MinIO's environment, needed
to restart them), hence mode 0600.

Changes go through ``locked``: a file lock around read, modify, write, so that two fault
commands never lose each other's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeorch.errors import Conflict, NotFound
from pipeorch.local.commands import DEFAULT_WORKDIR
from pipeorch.local.gateway import LatencyGateway, Link
from pipeorch.local.pids import Pid, is_running
from pipeorch.local.processes import Proc

STATE_FILE = "state.json"
_LOCK_FILE = "state.lock"

Kind = Literal["replica", "worker", "store", "gateway"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProcessRecord(_Record):
    name: str
    kind: Kind
    region: str | None = None
    pid: int
    started: int | None
    argv: list[str]
    #: Set on top of the environment when started (credentials, for workers and MinIO).
    env: dict[str, str] = {}
    log: str
    #: What it serves, by role: raft, grpc, http; s3, console; api.
    addresses: dict[str, str] = {}

    @classmethod
    def of(
        cls, proc: Proc, kind: Kind, region: str | None, addresses: dict[str, str]
    ) -> ProcessRecord:
        """The record of ``proc``, which runs."""
        assert proc.popen is not None
        pid = Pid.of(proc.popen.pid)
        return cls(
            name=proc.name,
            kind=kind,
            region=region,
            pid=pid.pid,
            started=pid.started,
            argv=proc.argv,
            env=proc.env,
            log=str(proc.log_path.resolve()),
            addresses=addresses,
        )

    @property
    def proc(self) -> Pid:
        return Pid(self.pid, self.started)

    @property
    def running(self) -> bool:
        return is_running(self.proc)


class PairLatency(_Record):
    a: str
    b: str
    rtt_ms: float
    jitter_ms: float


class GatewayRecord(_Record):
    api: str
    links: list[Link]  # the gateway's own records, validated by their dataclass fields
    #: Regions whose links are cut (``local partition``).
    partitioned: list[str] = []
    #: The round trip the gateway gives each pair now (``local latency`` changes them).
    latency: list[PairLatency] = []

    @classmethod
    def of(cls, gateway: LatencyGateway) -> GatewayRecord:
        return cls(
            api=gateway.api_address,
            links=list(gateway.links()),
            partitioned=gateway.partitioned,
            latency=[
                PairLatency(a=a, b=b, rtt_ms=rtt, jitter_ms=jitter)
                for (a, b), (rtt, jitter) in sorted(gateway.latencies().items())
            ],
        )


class SystemState(_Record):
    version: Literal[1] = 1
    workdir: str
    #: The ``up`` command: it runs as long as the system in the foreground, exits when detached.
    owner_pid: int
    owner_started: int | None
    detached: bool
    phase: Literal["starting", "up"] = "starting"
    started_at: float
    #: The CloudRegion documents the system was started from.
    regions: str
    env_file: str = ""
    processes: list[ProcessRecord] = []
    gateway: GatewayRecord | None = None

    @property
    def owner(self) -> Pid:
        return Pid(self.owner_pid, self.owner_started)

    def running(self) -> bool:
        """Anything of this system still runs: its foreground ``up`` or one of its processes."""
        return is_running(self.owner) or any(p.running for p in self.processes)

    def named(self, kind: Kind) -> dict[str, ProcessRecord]:
        return {p.name: p for p in self.processes if p.kind == kind}

    def addresses(self) -> list[str]:
        """Every HOST:PORT the system listens on: its processes' and the gateway's proxies."""
        found = [a for p in self.processes for a in p.addresses.values()]
        if self.gateway is not None:
            found += [link.listen for link in self.gateway.links]
        return found


def path(workdir: Path) -> Path:
    return workdir / STATE_FILE


def load(workdir: Path) -> SystemState | None:
    """The recorded state, or None when there is none."""
    try:
        text = path(workdir).read_text()
    except FileNotFoundError:
        return None
    try:
        return SystemState.model_validate_json(text)
    except ValidationError as e:
        raise Conflict(
            f"{path(workdir)} is not a state file this version understands ({e.error_count()} "
            "problems): stop its processes by hand and remove it"
        ) from e


def find(workdir: Path) -> SystemState:
    """The state of the system running in ``workdir``; NotFound when none runs there."""
    state = load(workdir)
    if state is None or not state.running():
        raise NotFound(
            f"no running system in {workdir}: start one with `pipeorch local up --detach"
            f"{workdir_flag(workdir)}`"
        )
    return state


def save(state: SystemState) -> None:
    """Write ``state`` whole, atomically (readers see the old or the new file), mode 0600."""
    target = path(Path(state.workdir))
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(state.model_dump_json(indent=2) + "\n")
    os.replace(tmp, target)


def claim(workdir: Path, detached: bool, regions: str) -> SystemState:
    """Record a new system in ``workdir``, owned by this process. Refuses while the system of
    an earlier ``up`` still runs there; forgets one that stopped without ``down``."""
    workdir.mkdir(parents=True, exist_ok=True)
    with locked(workdir):
        earlier = load(workdir)
        if earlier is not None and earlier.running():
            raise Conflict(_already_running(workdir, earlier))
        path(workdir).unlink(missing_ok=True)
        me = Pid.of(os.getpid())
        state = SystemState(
            workdir=str(workdir.resolve()),
            owner_pid=me.pid,
            owner_started=me.started,
            detached=detached,
            started_at=time.time(),
            regions=regions,
        )
        save(state)
        return state


def release(workdir: Path) -> None:
    with locked(workdir):
        path(workdir).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(workdir: Path) -> Iterator[None]:
    """Hold the workdir's state lock (a blocking advisory lock) for a read-modify-write."""
    fd = os.open(workdir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _already_running(workdir: Path, state: SystemState) -> str:
    how = (
        "detached"
        if state.detached
        else f"in the foreground of `pipeorch local up`, pid {state.owner_pid}"
    )
    since = time.strftime("%H:%M:%S", time.localtime(state.started_at))
    return (
        f"a system is already running in {workdir} ({how}, since {since}): "
        f"`pipeorch local down{workdir_flag(workdir)}` stops it"
    )


def workdir_flag(workdir: Path) -> str:
    """``--workdir`` for a command line that names ``workdir``; nothing for the default."""
    return "" if workdir.resolve() == Path(DEFAULT_WORKDIR).resolve() else f" --workdir {workdir}"
