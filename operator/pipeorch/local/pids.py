"""Processes known only by their recorded pid: started detached, found again, signalled, stopped.

A detached system outlives the command that started it, so later commands (``local down``,
the faults) act on pids read from its state file. A pid alone can be reused once its process is
gone; the process's start time (``/proc/<pid>/stat``, clock ticks since boot) recorded next to
it tells ours from a stranger, and a stranger is never signalled.

A dead process whose parent has exited stays a zombie wherever PID 1 does not reap orphans
(some containers): it runs nothing and holds no port, so it counts as gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The environment variables a restarted process does not inherit from the restarting shell:
#: they configure pipeorch, and the recorded environment says what this process had.
_OWN_PREFIX = "PIPEORCH_"


@dataclass(frozen=True)
class Pid:
    """A process: its pid and start time (None where /proc is not there to tell)."""

    pid: int
    started: int | None

    @classmethod
    def of(cls, pid: int) -> Pid:
        return cls(pid, start_time(pid))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None without /proc."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(proc: Pid) -> bool:
    """``proc`` exists, is not a zombie and is the process that was recorded."""
    fields = _stat_fields(proc.pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False  # /proc works: the process is gone
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return proc.started is None or int(fields[19]) == proc.started


def send(proc: Pid, sig: int) -> bool:
    """Signal ``proc`` if it is still the recorded process; whether it was signalled."""
    if not is_running(proc):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
        return True
    return False


def stop(procs: Iterable[Pid], grace: float = 10.0) -> list[Pid]:
    """SIGTERM every process, SIGKILL those still running after ``grace`` seconds; return the
    ones that were still running at the end (none, unless a process cannot be killed)."""
    pending = [p for p in procs if send(p, signal.SIGTERM)]
    pending = _wait_gone(pending, grace)
    for proc in pending:
        # The whole group: a detached process leads its own, with whatever it started.
        if is_running(proc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return _wait_gone(pending, 5.0)


def _wait_gone(procs: list[Pid], timeout: float) -> list[Pid]:
    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in procs if is_running(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(0.05)


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> Pid:
    """Start ``argv`` detached: its own session (no terminal, no Ctrl-C from ours), stdin from
    /dev/null, output appended to ``log_path``; it outlives the caller."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIX)}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**base, **env},
            start_new_session=True,
        )
    return Pid.of(popen.pid)
