"""Faults on a running local system, in the vocabulary of the chaos experiments.

Each acts on the system found through the workdir's state file and says what it did:

* ``kill_leader``: SIGKILL the replica that leads Raft now (the others elect a new one);
* ``kill_worker``: SIGKILL one worker of a region (the leader requeues its tasks once it misses
  three heartbeats);
* ``partition``: cut every gateway link to and from a region, optionally healing it after a
  while (the region's processes still talk to each other);
* ``heal``: every link up again (killed processes stay down: ``restart`` brings them back);
* ``set_latency``: give a pair of regions another round trip through the gateway;
* ``restart``: start a process again from its recorded command line, data and id.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import httpx

from pipeorch.errors import Conflict, GatewayError, InvalidInput
from pipeorch.local import pids, statefile
from pipeorch.local.gateway import LatencyGateway
from pipeorch.local.processes import wait_until
from pipeorch.local.rtt import Targets, measure_matrix
from pipeorch.local.running import RunningSystem
from pipeorch.local.statefile import GatewayRecord, ProcessRecord

#: How long a fault waits for the condition it needs (a leader to kill, a process to serve).
WAIT_SECONDS = 15.0
#: Requests timed per direction when a changed round trip is measured.
RTT_SAMPLES = 5


def kill_leader(system: RunningSystem, out: TextIO) -> str:
    """SIGKILL the current Raft leader; returns its name."""
    live = system.live()
    if len(live) < 2:
        running = f"only {live[0]} runs" if live else "no replica runs"
        raise Conflict(f"no leader to kill: {running}, so no quorum and no leader")
    try:
        leader = wait_until(system.claimed_leader, WAIT_SECONDS, what="a leader")
    except TimeoutError as e:
        raise Conflict(f"no replica has led for {WAIT_SECONDS:g}s: nothing to kill") from e
    replica = system.replicas[leader]
    term = system.raft(leader)["term"]
    _kill(replica)
    out.write(
        f"killed the leader {leader} ({replica.region}, pid {replica.pid}, term {term}): the "
        f"others elect a new one; `pipeorch local restart {leader}` brings it back\n"
    )
    return leader


def kill_worker(system: RunningSystem, region: str, out: TextIO) -> str:
    """SIGKILL one running worker of ``region``; returns its name."""
    workers = system.workers(system.region(region))
    if not workers:
        raise Conflict(f"region {region} runs no workers")
    running = [w for w in workers if w.running]
    if not running:
        names = ", ".join(w.name for w in workers)
        raise Conflict(
            f"no worker left in {region}: {names} already killed; "
            "`pipeorch local restart NAME` brings one back"
        )
    victim = running[0]
    _kill(victim)
    out.write(
        f"killed worker {victim.name} ({region}, pid {victim.pid}); {len(running) - 1} left in "
        f"{region}. The leader requeues its tasks once it misses three heartbeats\n"
    )
    return victim.name


def partition(system: RunningSystem, region: str, seconds: float | None, out: TextIO) -> None:
    """Cut ``region`` off from the others; with ``seconds``, heal it after that long (or at
    Ctrl-C)."""
    region = system.region(region)
    with _changing_gateway(system) as gateway:
        before = len(gateway.partitioned)
        gateway.disable_links(region)
        cut = [link for link in gateway.links() if link.touches(region)]
        was_cut = len(gateway.partitioned) == before
    others = ", ".join(r for r in system.layout.names if r != region)
    note = " (it already was)" if was_cut else ""
    out.write(
        f"cut {region} off from {others}{note}: {len(cut)} links down (Raft, workers to "
        f"replicas, the object store); traffic inside {region} goes on\n"
    )
    if seconds is None:
        out.write("`pipeorch local heal` reconnects it\n")
        return
    out.write(f"healing {region} in {seconds:g}s (Ctrl-C heals now)\n")
    out.flush()
    try:
        time.sleep(seconds)
    finally:
        with _changing_gateway(system) as gateway:
            gateway.enable_links(region)
        out.write(f"healed {region}: its links are up again\n")


def heal(system: RunningSystem, out: TextIO) -> None:
    """Every gateway link up again. Killed processes are reported, not restarted."""
    with _changing_gateway(system) as gateway:
        was_cut = gateway.partitioned
        gateway.enable_all_links()
    if was_cut:
        out.write(f"reconnected {', '.join(was_cut)}: every link is up\n")
    else:
        out.write("no region was cut: every link is up\n")
    down = [p.name for p in system.state.processes if not p.running]
    if down:
        out.write(f"still down: {', '.join(down)} (`pipeorch local restart NAME`)\n")


def set_latency(
    system: RunningSystem, a: str, b: str, rtt_ms: float, jitter_ms: float | None, out: TextIO
) -> None:
    """Give the pair ``a``, ``b`` the round trip ``rtt_ms`` through the gateway, both ways;
    measure it when both regions' replicas can be reached."""
    a, b = system.region(a), system.region(b)
    if a == b:
        raise InvalidInput("B", f"a region has no round trip to itself ({a} and {b})")
    if rtt_ms <= 0:
        raise InvalidInput("MS", f"a round trip must be more than 0 ms, not {rtt_ms:g}")
    with _changing_gateway(system) as gateway:
        was = gateway.rtt_ms(a, b)
        jitter = gateway.jitter_ms(a, b) if jitter_ms is None else jitter_ms
        if jitter >= rtt_ms or jitter < 0:
            raise InvalidInput(
                "--jitter", f"{jitter:g} ms: must be at least 0 and below the round trip"
            )
        gateway.set_latency(a, b, rtt_ms, jitter)
        measured = _measure_pair(system, gateway, a, b)
    out.write(f"round trip {a} <-> {b}: {rtt_ms:g} ms (jitter {jitter:g} ms), was {was:g} ms\n")
    out.write(f"measured through the gateway: {measured}\n")


def restart(system: RunningSystem, name: str, out: TextIO) -> None:
    """Start ``name`` again as recorded (stopping it first if it runs); wait until it serves."""
    proc = system.process(name)
    if proc.kind == "gateway":
        raise Conflict(
            "the gateway cannot restart alone: its proxies live in it. "
            "`pipeorch local down` and `up` start everything afresh"
        )
    with statefile.locked(system.workdir):
        system.reload()
        proc = system.process(name)
        was_running = proc.running
        if was_running:
            pids.stop([proc.proc])
        started = pids.spawn(proc.argv, proc.env, Path(proc.log))
        proc.pid, proc.started = started.pid, started.started
        statefile.save(system.state)
    verb = "stopped and restarted" if was_running else "restarted"
    out.write(f"{verb} {name} ({proc.region or '-'}, pid {proc.pid}); waiting until it serves\n")
    out.flush()
    _wait_serving(system, proc)
    note = {
        "replica": ": it reloads its journal and catches up with the leader",
        "worker": ": it registers again under its id",
    }.get(proc.kind, "")
    out.write(f"{name} serves{note}\n")


# ---- helpers --------------------------------------------------------------------------------


def _kill(proc: ProcessRecord) -> None:
    pids.send(proc.proc, signal.SIGKILL)
    wait_until(lambda: not proc.running, 5, what=f"{proc.name} gone")


@contextlib.contextmanager
def _changing_gateway(system: RunningSystem) -> Iterator[LatencyGateway]:
    """The gateway as last recorded, under the state lock; its new state is recorded after."""
    with statefile.locked(system.workdir):
        system.reload()
        gateway = system.gateway()
        try:
            yield gateway
        finally:
            system.state.gateway = GatewayRecord.of(gateway)
            gateway.close()
            statefile.save(system.state)


def _measure_pair(system: RunningSystem, gateway: LatencyGateway, a: str, b: str) -> str:
    """``a -> b`` and ``b -> a`` through the gateway, to each region's replica, as text."""
    targets: Targets = {}
    for node_id, replica in system.replicas.items():
        if replica.region in (a, b) and replica.running:
            targets.setdefault(replica.region, (f"{node_id}-http", replica.addresses["http"]))
    if len(targets) < 2:
        return f"not measured: {a} or {b} has no running replica"
    if set(gateway.partitioned) & {a, b}:
        return f"not measured: {'/'.join(sorted(set(gateway.partitioned) & {a, b}))} is cut off"
    try:
        measured = measure_matrix(gateway, targets, RTT_SAMPLES)
    except GatewayError as e:
        return f"not measured: {e}"
    return f"{a} -> {b} {measured[(a, b)]:.1f} ms, {b} -> {a} {measured[(b, a)]:.1f} ms"


def _wait_serving(system: RunningSystem, proc: ProcessRecord) -> None:
    if proc.kind == "replica":
        # Not /healthz: it also probes the object store, which a cut region cannot reach.
        url = f"http://{proc.addresses['http']}/raft"
    elif "http" in proc.addresses:
        url = f"http://{proc.addresses['http']}/healthz"
    elif "s3" in proc.addresses:
        url = f"http://{proc.addresses['s3']}/minio/health/live"
    else:
        return

    def serving() -> bool:
        if not proc.running:
            raise Conflict(f"{proc.name} exited at start; see {proc.log}")
        return httpx.get(url, timeout=2).status_code == 200

    try:
        wait_until(serving, 30, interval=0.1, what=f"{proc.name} serving")
    except TimeoutError as e:
        raise Conflict(f"{proc.name} does not serve {url}; see {proc.log}") from e
