"""The worker's pool of warm step hosts (see step_host): one busy host per running `run:` step.

A host is an ordinary child process: in a session of its own (a timeout kills it and whatever
the step started), killed with the worker (die_with_worker), and replaced after any attempt it
did not answer: a timeout, a crash, or a step that ended the interpreter. The exit status
reported for such an attempt is the one a process of its own would have had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from pipeorch_worker.process import die_with_worker, kill_group

log = logging.getLogger(__name__)


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Host:
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    expired: bool = False

    def kill(self) -> None:
        kill_group(self.process.pid)
        self.writer.close()

    def expire(self) -> None:
        """The step ran out of time: kill it (the pending read then ends)."""
        self.expired = True
        self.kill()


class HostPool:
    def __init__(self, env: dict[str, str], size: int) -> None:
        self._env = env
        self._size = size
        self._idle: list[_Host] = []
        self._all: set[_Host] = set()
        self._discarding: set[asyncio.Task[None]] = set()
        self._filling: asyncio.Task[None] | None = None

    async def warm(self) -> None:
        """Start one host ahead of the first step, then the rest of the pool in the background,
        one at a time (as a prefork pool does): a burst of short steps finds every slot's
        interpreter ready instead of paying for its start while the queue waits."""
        if not self._all:
            self._idle.append(await self._spawn())
        if self._filling is None:
            self._filling = asyncio.get_running_loop().create_task(self._fill())

    async def filled(self) -> None:
        """Return once the background start of the pool (see ``warm``) has ended."""
        if self._filling is not None:
            await asyncio.shield(self._filling)

    @property
    def ready(self) -> int:
        """Hosts started and not retired."""
        return len(self._all)

    async def _fill(self) -> None:
        while len(self._all) < self._size:
            try:
                self._idle.append(await self._spawn())
            except OSError as e:  # steps still start hosts of their own when they need one
                log.warning("cannot start a warm step host: %s", e)
                return

    async def run(self, request: dict[str, Any], timeout: float) -> tuple[int, bool, int | None]:
        """Run one step request: (exit status, timed out, bytes the step logged if known)."""
        for _ in range(2):  # a host that retires (its step code changed) is replaced once
            host = self._idle.pop() if self._idle else await self._spawn()
            try:
                reply = await self._ask(host, request, timeout)
            except TimeoutError:
                await self._discard(host)
                return -9, True, None
            except asyncio.CancelledError:
                await self._discard(host)
                raise
            if reply is None:  # the interpreter ended during the step
                code = await host.process.wait()
                await self._discard(host)
                return code, False, None
            if reply.get("retire"):
                await self._discard(host)
                continue
            self._release(host)
            return int(reply["exit"]), False, reply.get("log_bytes")
        raise RuntimeError("a fresh step host retired before running its first step")

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        for host in list(self._all):
            await self._discard(host)

    async def _ask(
        self, host: _Host, request: dict[str, Any], timeout: float
    ) -> dict[str, Any] | None:
        host.writer.write(json.dumps(request).encode() + b"\n")
        await host.writer.drain()
        # A timer that kills the host ends the read (its socket closes): cheaper than a
        # timeout scope around every step.
        expiry = asyncio.get_running_loop().call_later(timeout, host.expire)
        try:
            line = await host.reader.readline()
        finally:
            expiry.cancel()
        if host.expired:
            raise TimeoutError
        return json.loads(line) if line else None

    async def _spawn(self) -> _Host:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "pipeorch_worker.step_host", str(theirs.fileno())]
        try:
            process = await asyncio.create_subprocess_exec(
                *die_with_worker(argv, os.getpid()),
                env=self._env,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        host = _Host(process, reader, writer)
        self._all.add(host)
        return host

    def _release(self, host: _Host) -> None:
        if len(self._idle) < self._size:
            self._idle.append(host)
        else:
            # The loop holds tasks only weakly: keep this one until it is done.
            task = asyncio.get_running_loop().create_task(self._discard(host))
            self._discarding.add(task)
            task.add_done_callback(self._discarding.discard)

    async def _discard(self, host: _Host) -> None:
        self._all.discard(host)
        host.kill()
        await host.process.wait()
