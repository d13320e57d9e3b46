"""Ray peer benchmark: a local single-node Ray with two CPUs, on loopback.

Standalone: run with the Ray env's python by `python -m bench.peers`. It starts
`ray.init(num_cpus=2, include_dashboard=False)` bound to 127.0.0.1 (Ray otherwise picks the
machine's outward address), with usage stats off and a small object store, waits until two
worker processes have run tasks, then measures (see measure.py):
(A) a chain of `noop.remote(prev_ref)` calls, each given the previous task's ObjectRef;
(B) a list of independent `noop.remote()` calls, then one `ray.get` of them all;
(C) `ray.get(noop.remote())` round trips.
Ray is shut down at the end, also on error, and its session directory removed. The last
stdout line is the JSON.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import version

# Read when ray is imported: keep every Ray address on loopback, send no usage stats, and
# ignore that the driver is started under `uv run` (Ray would otherwise run its workers
# through `uv run` of the repository's project instead of this env's python).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"

import measure
import ray

WORKERS_TEXT = (
    "ray.init(num_cpus=2, include_dashboard=False) on 127.0.0.1: "
    "2 worker processes (one per CPU), raylet and GCS local, 256 MiB object store"
)
OBJECT_STORE_BYTES = 256 * 1024 * 1024


@ray.remote
def noop(prev: object = None) -> None:
    """The no-op task; `prev` receives the previous result inside a chain."""


@ray.remote
def worker_pid(hold: float) -> int:
    """Holds a CPU for `hold` seconds and says which worker process ran it."""
    time.sleep(hold)
    return os.getpid()


def wait_for_two_workers(timeout: float = 60.0) -> None:
    """Runs pairs of tasks that overlap in time until two distinct worker processes answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(set(ray.get([worker_pid.remote(0.2) for _ in range(2)]))) == 2:
            return
    raise RuntimeError(f"Ray did not run two workers within {timeout:.0f}s")


def run_chain(n: int) -> None:
    """(A) n dependent no-ops chained by ObjectRefs; blocks for the last one's result."""
    ref = noop.remote()
    for _ in range(n - 1):
        ref = noop.remote(ref)
    ray.get(ref)


def run_fanout(m: int) -> None:
    """(B) m independent no-ops; blocks until every result is back."""
    ray.get([noop.remote() for _ in range(m)])


def run_once() -> None:
    """(C) one no-op submitted and waited for."""
    ray.get(noop.remote())


def main() -> int:
    """Starts Ray, measures, shuts it down, prints the JSON line."""
    args = measure.arg_parser(__doc__).parse_args()
    temp_dir = tempfile.mkdtemp(prefix="peers-ray-")
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
            logging_level="warning",
            _node_ip_address="127.0.0.1",
            _temp_dir=temp_dir,
        )
        wait_for_two_workers()
        result = measure.measure(args, run_chain, run_fanout, run_once)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    result["version"] = {"ray": version("ray")}
    result["workers"] = WORKERS_TEXT
    measure.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
