"""Celery peer benchmark: a Redis broker and result backend, two worker processes.

Standalone: run with the Celery env's python by `python -m bench.peers`, which passes the
redis-server binary. It starts Redis on a free loopback port without persistence, starts two
`celery worker --pool=prefork --concurrency=1` processes (two worker processes, like Dask's
two single-threaded workers and Ray's two CPUs), waits until both answer a ping, then
measures (see measure.py):
(A) a `chain` of no-op tasks, each given the previous one's result;
(B) a `group` of independent no-op tasks;
(C) `noop.delay().get()` round trips.
The workers and Redis are stopped at the end, also on error. The last stdout line is the JSON.

The workers import this module (`-A celery_bench`) to get the app and the task; they read the
Redis address from PEERS_REDIS_URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from importlib.metadata import version
from pathlib import Path

import measure
import redis
from celery import Celery, chain, group

HERE = Path(__file__).resolve().parent
WORKERS = ("w1", "w2")
WORKERS_TEXT = (
    "2 celery worker processes, each --pool=prefork --concurrency=1 "
    "(one child process runs tasks), gossip and mingle off, default prefetch; "
    "Redis broker and result backend on loopback"
)
RESULT_TIMEOUT = 120.0


class WorkerExited(RuntimeError):
    """A process that was being waited for has died: waiting longer cannot help."""


app = Celery("peers")
app.conf.update(
    broker_url=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379") + "/0",
    result_backend=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379") + "/1",
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


@app.task(name="peers.noop")
def noop(prev: object = None) -> None:
    """The no-op task; `prev` receives the previous result inside a chain."""


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Sends `sig` (a clean shutdown) and waits; kills the process if it outlives `grace`."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Polls `check()` until it returns true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except WorkerExited:
            raise
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s")


def ping(port: int) -> bool:
    """True if Redis answers on the port."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
        return bool(client.ping())


@contextmanager
def redis_server(binary: str, workdir: Path) -> Iterator[str]:
    """Runs redis-server on a free loopback port with no persistence; yields its URL."""
    port = free_port()
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"]
    with (workdir / "redis.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ping(port), "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)


def start_worker(name: str, url: str, workdir: Path) -> subprocess.Popen[bytes]:
    """Starts one prefork worker with a single child process, logging to workdir."""
    cmd = [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "--pool=prefork"]
    cmd += ["--concurrency=1", "-n", f"{name}@127.0.0.1", "--without-gossip"]
    cmd += ["--without-mingle", "--loglevel=WARNING"]
    env = {**os.environ, "PEERS_REDIS_URL": url, "PYTHONPATH": str(HERE)}
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(cmd, env=env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)


def workers_answering(procs: list[subprocess.Popen[bytes]]) -> bool:
    """True once every worker replies to a broadcast ping; fails if a worker has exited."""
    if any(proc.poll() is not None for proc in procs):
        raise WorkerExited("a celery worker exited while starting")
    replies = app.control.ping(timeout=0.5)
    names = {name for reply in replies for name in reply}
    return names >= {f"{w}@127.0.0.1" for w in WORKERS}


@contextmanager
def workers(url: str, workdir: Path) -> Iterator[None]:
    """Starts the workers, yields once both answer, and stops them (warm shutdown) after."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = [start_worker(name, url, workdir) for name in WORKERS]
        wait_for(lambda: workers_answering(procs), "celery workers")
        yield
    finally:
        for proc in procs:
            stop(proc)


@contextmanager
def logs_on_error(workdir: Path) -> Iterator[None]:
    """On an error, copies the tail of Redis's and the workers' logs to stderr."""
    try:
        yield
    except BaseException:
        for log in sorted(workdir.glob("*.log")):
            tail = log.read_text(errors="replace")[-3000:]
            print(f"--- {log.name} (tail)\n{tail}", file=sys.stderr)
        raise


def run_chain(n: int) -> None:
    """(A) n dependent no-ops as one chain; blocks for the last one's result."""
    chain(*[noop.s() for _ in range(n)]).apply_async().get(timeout=RESULT_TIMEOUT)


def run_fanout(m: int) -> None:
    """(B) m independent no-ops as one group; blocks until every result is back."""
    group(noop.s() for _ in range(m)).apply_async().get(timeout=RESULT_TIMEOUT)


def run_once() -> None:
    """(C) one no-op submitted and waited for."""
    noop.delay().get(timeout=RESULT_TIMEOUT)


def main() -> int:
    """Starts Redis and the workers, measures, stops everything, prints the JSON line."""
    parser = measure.arg_parser(__doc__)
    parser.add_argument("--redis-server", default="redis-server", help="the binary to run")
    args = parser.parse_args()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-celery-")))
        stack.enter_context(logs_on_error(workdir))
        url = stack.enter_context(redis_server(args.redis_server, workdir))
        app.conf.update(broker_url=f"{url}/0", result_backend=f"{url}/1")
        stack.enter_context(workers(url, workdir))
        result = measure.measure(args, run_chain, run_fanout, run_once)
    packages = ("celery", "kombu", "billiard", "redis")
    result["version"] = {name: version(name) for name in packages}
    result["workers"] = WORKERS_TEXT
    measure.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
