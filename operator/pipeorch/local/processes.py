"""Local processes: free ports, waiting on a condition, and a child process with its log file.

Shared by the cluster launcher and the latency gateway.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


#: Ports this process handed out recently. A port is free when picked but taken only once
#: its server binds it: without this, two picks a moment apart (one cluster's workers, say)
#: could return the same port, and the second server fails to bind.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=4096)


def free_ports(count: int) -> list[int]:
    """Ports free right now, for servers started a moment later; never one this process
    handed out recently.

    They come from below the kernel's ephemeral range: a port picked by binding port 0 comes
    from that range, and can be taken by any outgoing connection in the gap between picking it
    and the server binding it. Random picks keep concurrent runs apart.
    """
    low = 10000
    high = _ephemeral_range()[0] - 1
    rng = random.SystemRandom()
    chosen: list[int] = []
    sockets = []
    recent = set(_HANDED_OUT)
    try:
        while len(chosen) < count:
            port = rng.randint(low, high)
            if port in chosen or port in recent:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
            chosen.append(port)
        _HANDED_OUT.extend(chosen)
        return chosen
    finally:
        for s in sockets:
            s.close()


def wait_until(
    probe: Callable[[], T | None], timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Call ``probe`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except (httpx.HTTPError, OSError) as e:
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:g}s (last error: {last_error})")


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
