"""Child processes of the worker (steps and step hosts): started so they die with it."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal

log = logging.getLogger(__name__)

# Runs between setpriv arming the parent-death signal and the step itself. A worker killed
# after the fork but before setpriv's prctl leaves the child orphaned with no signal armed; it
# then has a new parent, which this check sees (the signal covers every later death).
_PARENT_CHECK = '[ "$PPID" = "$1" ] || exit 137; shift; exec "$@"'


def die_with_worker(argv: list[str], worker_pid: int) -> list[str]:
    """``argv`` wrapped so that the process gets SIGKILL when the worker ``worker_pid`` dies.

    Steps run in a session of their own (so a timeout can kill the whole group), which also
    shields them from the signals that end the worker; without this a SIGKILLed worker would
    leave its step running, with effects after its attempt was lost. util-linux's setpriv arms
    the signal rather than a ``preexec_fn``: that would make Python fork the whole worker
    instead of vfork, and gRPC's fork handlers then abort the child now and then.
    """
    if SETPRIV is None:
        return argv
    check = ["/bin/sh", "-c", _PARENT_CHECK, "pipeorch-step", str(worker_pid)]
    return [SETPRIV, "--pdeathsig", "KILL", "--", *check, *argv]


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a step and everything it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


SETPRIV = shutil.which("setpriv")
if SETPRIV is None:
    log.warning("setpriv (util-linux) not found: steps outlive a killed worker")
