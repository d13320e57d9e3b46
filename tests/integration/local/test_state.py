"""The state file and recorded pids on their own: a stranger behind a reused pid is never
signalled, a zombie counts as gone, a process that ignores SIGTERM gets SIGKILL, a running
system's claim is refused and a dead one's is taken over, and a fresh start clears only what an
earlier run left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeorch.errors import Conflict, NotFound
from pipeorch.local import pids, statefile
from pipeorch.local.up import clear_previous_run

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
DEAF = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
    "time.sleep(60)",
]


def test_a_recorded_pid_is_ours_only_with_its_start_time():
    child = subprocess.Popen(SLEEP)
    try:
        ours = pids.Pid.of(child.pid)
        assert pids.is_running(ours)
        stranger = pids.Pid(child.pid, (ours.started or 0) + 1)  # the pid, reused by another
        assert not pids.is_running(stranger)
        assert not pids.send(stranger, signal.SIGKILL)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
    assert not pids.is_running(ours)


def test_a_zombie_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = pids.Pid.of(child.pid)
    # Not reaped: it stays a zombie until wait().
    deadline = time.monotonic() + 10
    while pids.is_running(proc) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pids.is_running(proc)
    assert os.path.exists(f"/proc/{child.pid}")  # still there, as a zombie
    child.wait()


def test_stop_sends_sigkill_after_the_grace_to_a_process_that_ignores_sigterm(tmp_path):
    log = tmp_path / "deaf.log"
    deaf = pids.spawn(DEAF, {}, log)
    deadline = time.monotonic() + 10
    while not log.read_text() and time.monotonic() < deadline:  # its handler is in place
        time.sleep(0.02)
    assert os.getsid(deaf.pid) == deaf.pid  # a session of its own
    started = time.monotonic()
    assert pids.stop([deaf], grace=0.5) == []
    assert time.monotonic() - started >= 0.5
    assert not pids.is_running(deaf)


def test_a_claim_is_refused_while_its_system_runs_and_taken_over_once_it_stopped(tmp_path):
    state = statefile.claim(tmp_path, detached=False, regions="")
    assert statefile.path(tmp_path).stat().st_mode & 0o777 == 0o600
    with pytest.raises(Conflict, match=f"a system is already running in {tmp_path}"):
        statefile.claim(tmp_path, detached=True, regions="")  # this process still owns it
    assert statefile.find(tmp_path) == state

    # An owner that is gone, with nothing recorded still running: a system that stopped.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.owner_pid, state.owner_started = dead.pid, 1
    statefile.save(state)
    with pytest.raises(NotFound, match=f"no running system in {tmp_path}"):
        statefile.find(tmp_path)
    again = statefile.claim(tmp_path, detached=True, regions="")
    assert again.detached
    statefile.release(tmp_path)
    assert statefile.load(tmp_path) is None


def test_a_fresh_start_clears_only_what_an_earlier_run_left(tmp_path):
    for name in ("cp-0", "worker-aws-w1", "minio-data"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_text("earlier")
    for name in ("cp-0.log", "worker-aws-w1.log", "minio.log", "toxiproxy.log", "env"):
        (tmp_path / name).write_text("earlier")
    kept = ["notes.txt", "cp-x", "my-data", "state.lock"]
    for name in kept:
        (tmp_path / name).write_text("mine")
    clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
