"""A step process never outlives its worker: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeorch.local.cluster import wait_until
from pipeorch_worker.process import SETPRIV, die_with_worker

from ..conftest import alive

pytestmark = pytest.mark.skipif(SETPRIV is None, reason="needs util-linux setpriv")


def test_the_step_runs_under_its_live_worker(tmp_path):
    marker = tmp_path / "ran"
    argv = die_with_worker(["touch", str(marker)], os.getpid())
    assert subprocess.run(argv, check=False).returncode == 0
    assert marker.exists()


def test_a_step_orphaned_before_the_signal_was_armed_never_runs(tmp_path):
    """The worker died between fork and setpriv: the step sees a parent that is not its worker."""
    marker = tmp_path / "ran"
    not_the_parent = os.getppid()  # alive, but not the parent of the process we start
    argv = die_with_worker(["touch", str(marker)], not_the_parent)
    assert subprocess.run(argv, check=False).returncode == 137
    assert not marker.exists()


def test_a_step_is_killed_with_its_worker(tmp_path):
    marker = tmp_path / "effect"
    worker = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        from pipeorch_worker.process import die_with_worker
        step = ["/bin/sh", "-c", "sleep 0.5; touch {marker}"]
        p = subprocess.Popen(die_with_worker(step, os.getpid()), start_new_session=True)
        print(p.pid, flush=True)
        time.sleep(60)
        """
    )
    fake_worker = subprocess.Popen(
        [sys.executable, "-c", worker], stdout=subprocess.PIPE, text=True
    )
    assert fake_worker.stdout is not None
    step_pid = int(fake_worker.stdout.readline())
    assert alive(step_pid)

    fake_worker.send_signal(signal.SIGKILL)
    fake_worker.wait()
    wait_until(lambda: not alive(step_pid), 5, interval=0.02, what="the step to die")
    time.sleep(1)  # past the step's own sleep: a survivor would have left its effect by now
    assert not marker.exists()
