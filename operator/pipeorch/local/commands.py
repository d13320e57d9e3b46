"""`pipeorch local ...`: start, look at, break and stop the whole system on this machine.

Parsing only imports the standard library: ``pipeorch controlplane`` and ``worker`` go through
the same parser, and start many times in every test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TextIO

#: Where `pipeorch local` keeps a system's logs, data and state, relative to the current directory.
DEFAULT_WORKDIR = ".pipeorch/local"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser("local", help="run the whole system as processes on this machine")
    commands = local.add_subparsers(dest="local_command", required=True)
    _add_up(commands)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--workdir", default=DEFAULT_WORKDIR, help="the workdir `local up` was given"
        )
        return p

    down = command("down", "stop every process of the system and remove its state")
    down.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a process may take to stop after SIGTERM before it gets SIGKILL",
    )
    command("status", "what runs where: processes, Raft roles, cut regions, changed latencies")
    command("kill-leader", "SIGKILL the replica that leads Raft now")
    kw = command("kill-worker", "SIGKILL one worker of a region")
    kw.add_argument("region")
    part = command("partition", "cut every gateway link to and from a region")
    part.add_argument("region")
    part.add_argument(
        "--for", dest="seconds", type=float, metavar="SECONDS", help="heal it after this long"
    )
    command("heal", "every gateway link up again (killed processes stay down: see restart)")
    lat = command("latency", "set the round trip between two regions through the gateway")
    lat.add_argument("a", metavar="A")
    lat.add_argument("b", metavar="B")
    lat.add_argument("ms", metavar="MS", type=float, help="round trip in milliseconds")
    lat.add_argument("--jitter", type=float, metavar="MS", help="default: the pair's current")
    rs = command("restart", "start a replica, worker or MinIO again (stopping it first)")
    rs.add_argument("name", help="cp-0, aws-w1, minio, ... (see `local status`)")


def _add_up(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lup = commands.add_parser(
        "up",
        help="one replica per region (aws, gcp, azure by default), their workers, MinIO and a "
        "latency gateway between regions; optionally run a pipeline",
    )
    lup.add_argument(
        "--regions",
        type=Path,
        metavar="FILE",
        help="CloudRegion documents: regions, round trips, workers, where MinIO lives "
        "(default: the built-in layout, the same as examples/regions.yaml)",
    )
    lup.add_argument(
        "--no-gateway",
        action="store_true",
        help="plain loopback between regions: no latency gateway, faster Raft timing",
    )
    lup.add_argument("--run", type=Path, metavar="FILE", help="submit this pipeline and follow it")
    lup.add_argument(
        "--code-path", action="append", type=Path, help="where steps' callables live (repeat)"
    )
    lup.add_argument(
        "--no-store", action="store_true", help="no MinIO: workers register but take no tasks"
    )
    lup.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        help="logs, Raft data and the state file; an earlier run's are replaced",
    )
    lup.add_argument(
        "--for", dest="duration", type=float, metavar="SECONDS", help="stop after this long"
    )
    lup.add_argument(
        "--detach",
        action="store_true",
        help="return once the system is up (and --run finished, with its exit status), "
        "leaving it running until `pipeorch local down`",
    )
    lup.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="also run the operator against this cluster: kubectl apply Pipelines, get Tasks",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Carry out ``pipeorch local <command>``; its exit status."""
    from pipeorch.local import faults
    from pipeorch.local.running import RunningSystem

    workdir = Path(args.workdir)
    command = args.local_command
    if command == "up":
        return _up(args, out)
    if command == "down":
        return down(workdir, args.grace, out)
    if command == "status":
        return status(workdir, out)
    with RunningSystem.find(workdir) as system:
        if command == "kill-leader":
            faults.kill_leader(system, out)
        elif command == "kill-worker":
            faults.kill_worker(system, args.region, out)
        elif command == "partition":
            faults.partition(system, args.region, args.seconds, out)
        elif command == "heal":
            faults.heal(system, out)
        elif command == "latency":
            faults.set_latency(system, args.a, args.b, args.ms, args.jitter, out)
        else:
            faults.restart(system, args.name, out)
    return 0


def _up(args: argparse.Namespace, out: TextIO) -> int:
    from pipeorch.errors import InvalidInput
    from pipeorch.local.up import up

    if args.detach and args.duration is not None:
        raise InvalidInput("--for", "a detached system runs until `pipeorch local down`")
    return up(
        Path(args.workdir),
        out,
        args.duration,
        run=args.run,
        code_path=args.code_path,
        with_store=not args.no_store,
        regions_file=args.regions,
        kubeconfig=args.kubeconfig,
        gateway=not args.no_gateway,
        detach=args.detach,
    )


def down(workdir: Path, grace: float, out: TextIO) -> int:
    """Stop the system in ``workdir``; nothing to do is not an error (scripts call it to clean
    up whatever state they left)."""
    from pipeorch.local import statefile
    from pipeorch.local.running import RunningSystem

    state = statefile.load(workdir)
    if state is None:
        out.write(f"nothing runs in {workdir}\n")
        return 0
    if not state.running():
        statefile.release(workdir)
        out.write(f"nothing runs in {workdir} (its system had stopped; state removed)\n")
        return 0
    with RunningSystem(state) as system:
        running = [p.name for p in state.processes if p.running]
        out.write(f"stopping {len(running)} processes in {workdir}: {', '.join(running)}\n")
        out.flush()
        left = system.stop(grace)
    if left:
        out.write(f"still running after SIGKILL: {', '.join(left)}\n")
        return 1
    out.write("stopped; state removed\n")
    return 0


def status(workdir: Path, out: TextIO) -> int:
    from pipeorch.local.running import RunningSystem, describe_gateway, describe_processes

    with RunningSystem.find(workdir) as system:
        state = system.state
        how = "detached" if state.detached else f"in the foreground (pid {state.owner_pid})"
        since = time.strftime("%H:%M:%S", time.localtime(state.started_at))
        uptime = int(time.time() - state.started_at)
        phase = "" if state.phase == "up" else ", still starting"
        out.write(f"system in {workdir}: {how}, up since {since} ({uptime}s){phase}\n\n")
        describe_processes(system, out)
        out.write("\n")
        describe_gateway(system, out)
        if state.env_file:
            out.write(f"client: source {state.env_file}; pipeorch get tasks\n")
    return 0
