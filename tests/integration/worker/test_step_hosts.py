"""Warm step hosts behave like a process per step: real interpreters over real sockets."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pipeorch.local.cluster import wait_until
from pipeorch_worker.hosts import HostPool
from pipeorch_worker.sdk import StepContext

from ..conftest import alive

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


STEPS = """
import os, subprocess, sys, time

CALLS = []

def hello(ctx):
    CALLS.append(ctx.step)
    print("hello from", ctx.step, "call", len(CALLS), "pid", os.getpid(), "cwd", os.getcwd())
    keys = sorted(k for k in os.environ if k.startswith("PIPEORCH_X"))
    print("env", keys, "values", [os.environ[k] for k in keys])
    print("to stderr", file=sys.stderr)

def quiet(ctx):
    pass

def clobber(ctx):
    os.environ["PIPEORCH_X_ONE"] = "changed by the step"

def boom(ctx):
    raise ValueError("bad row 7")

def leave(ctx):
    sys.exit(3)

def hang(ctx):
    child = subprocess.Popen(["sleep", "60"])
    open(ctx.params["pidfile"], "w").write(str(child.pid))
    time.sleep(60)
"""


class Steps:
    def __init__(self, tmp_path: Path) -> None:
        self.code = tmp_path / "code"
        self.code.mkdir()
        self.module = self.code / "hoststeps.py"
        self.module.write_text(STEPS)
        self.tmp = tmp_path
        env = {
            **os.environ,
            "PYTHONPATH": f"{self.code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        self.pool = HostPool(env, size=1)
        self.count = 0
        #: Bytes the host said the last step logged (None: it could not say).
        self.logged: int | None = None

    async def __aenter__(self) -> Steps:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.pool.close()

    async def run(
        self, ref: str, env: dict[str, str] | None = None, timeout: float = 20, **params: Any
    ) -> tuple[int, bool, str]:
        self.count += 1
        scratch = self.tmp / f"attempt-{self.count}"
        scratch.mkdir()
        log = scratch / "log.txt"
        context = StepContext("p", f"s{self.count}", "p.s", 1, params, {}, {}, scratch)
        request = {
            "ref": f"hoststeps:{ref}",
            "context": context.to_dict(),
            "cwd": str(scratch),
            "log": str(log),
            "env": env or {},
        }
        code, timed_out, logged = await self.pool.run(request, timeout)
        text = log.read_text() if log.exists() else ""
        if logged is not None:  # what the host counted is what the log holds
            assert logged == len(text.encode())
        self.logged = logged
        return code, timed_out, text


@pytest.fixture
def steps(tmp_path):
    return Steps(tmp_path)


def pid_of(log: str) -> str:
    return log.split(" pid ")[1].split()[0]


async def test_a_host_runs_steps_one_after_another_with_their_own_log_cwd_and_env(steps):
    async with steps:
        code, _, first = await steps.run("hello", env={"PIPEORCH_X_ONE": "1"})
        assert code == 0
        assert "hello from s1 call 1" in first
        assert "to stderr" in first
        assert f"cwd {steps.tmp / 'attempt-1'}" in first
        assert "env ['PIPEORCH_X_ONE']" in first

        code, _, second = await steps.run("hello", env={"PIPEORCH_X_TWO": "2"})
        assert code == 0
        assert "hello from s2 call 2" in second  # the same warm interpreter
        assert pid_of(second) == pid_of(first)
        assert "env ['PIPEORCH_X_TWO']" in second  # nothing left over from the first step
        assert "hello" not in (steps.tmp / "attempt-1" / "log.txt").read_text().split("\n", 2)[2]


async def test_the_host_counts_what_a_step_logged_and_zero_for_a_quiet_one(steps):
    async with steps:
        _, _, log = await steps.run("hello")
        assert steps.logged == len(log.encode()) > 0
        code, _, log = await steps.run("quiet")
        assert (code, steps.logged, log) == (0, 0, "")


async def test_a_variable_a_step_changed_is_set_again_for_the_next_step(steps):
    async with steps:
        await steps.run("clobber", env={"PIPEORCH_X_ONE": "1"})
        _, _, log = await steps.run("hello", env={"PIPEORCH_X_ONE": "1"})
        assert "env ['PIPEORCH_X_ONE'] values ['1']" in log


async def test_an_exception_is_exit_status_1_with_its_traceback_and_the_host_lives_on(steps):
    async with steps:
        _, _, before = await steps.run("hello")
        code, timed_out, log = await steps.run("boom")
        assert (code, timed_out) == (1, False)
        assert "Traceback" in log
        assert "ValueError: bad row 7" in log
        _, _, after = await steps.run("hello")
        assert pid_of(after) == pid_of(before)


async def test_an_unknown_callable_is_exit_status_2(steps):
    async with steps:
        code, _, log = await steps.run("nope")
        assert code == 2
        assert "cannot load step callable 'hoststeps:nope'" in log


async def test_a_step_that_exits_ends_its_host_with_that_status_and_a_fresh_one_follows(steps):
    async with steps:
        _, _, before = await steps.run("hello")
        code, timed_out, _ = await steps.run("leave")
        assert (code, timed_out) == (3, False)
        _, _, after = await steps.run("hello")
        assert "call 1" in after
        assert pid_of(after) != pid_of(before)


async def test_a_timeout_kills_the_host_and_what_the_step_started(steps):
    async with steps:
        pidfile = steps.tmp / "child.pid"
        code, timed_out, _ = await steps.run("hang", timeout=1.0, pidfile=str(pidfile))
        assert (code, timed_out) == (-9, True)
        child = int(pidfile.read_text())
        wait_until(lambda: not alive(child), 5, interval=0.02, what="the step's child to die")
        code, _, _ = await steps.run("hello")
        assert code == 0


async def test_an_edited_step_module_runs_as_edited(steps):
    async with steps:
        _, _, before = await steps.run("hello")
        steps.module.write_text(STEPS.replace('print("hello from"', 'print("edited, from"'))
        os.utime(steps.module, ns=(time.time_ns(), time.time_ns() + 10**9))  # a distinct mtime
        code, _, after = await steps.run("hello")
        assert code == 0
        assert "edited, from s2 call 1" in after
        assert pid_of(after) != pid_of(before)


async def test_the_pool_fills_to_its_size_in_the_background_and_close_ends_every_host(steps):
    steps.pool = HostPool(steps.pool._env, size=3)
    async with steps:
        await steps.pool.warm()  # returns once the first is up; the others follow
        await asyncio.wait_for(steps.pool.filled(), 30)
        assert steps.pool.ready == 3
        pids = {host.process.pid for host in steps.pool._all}
        # Three steps at once run in the three started interpreters, none started for them.
        results = await asyncio.gather(*(steps.run("hello") for _ in range(3)))
        assert {pid_of(log) for _, _, log in results} <= {str(p) for p in pids}
        assert steps.pool.ready == 3
    wait_until(lambda: not any(alive(p) for p in pids), 10, what="hosts gone after close")
