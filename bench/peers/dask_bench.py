"""Dask distributed peer benchmark: a LocalCluster of two single-threaded worker processes.

Standalone: run with the Dask env's python by `python -m bench.peers`. It starts
`LocalCluster(n_workers=2, threads_per_worker=1, processes=True)` on 127.0.0.1 with no
dashboard, waits for both workers, then measures (see measure.py):
(A) a chain of `delayed` no-ops, each given the previous one's result, computed as one graph
    with `optimize_graph=False` so that Dask does not fuse the chain into a single task;
(B) `client.map` of independent no-ops, then `client.gather`;
(C) `client.submit(noop).result()` round trips.
Every task is submitted with pure=False so that no run reuses an earlier run's results.
The cluster is closed at the end, also on error. The last stdout line is the JSON.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import version

import measure
from dask import delayed
from distributed import Client, LocalCluster

WORKERS_TEXT = (
    "LocalCluster(n_workers=2, threads_per_worker=1, processes=True): "
    "2 worker processes (each under a nanny), scheduler in the client process, loopback TCP"
)


def noop(prev: object = None) -> None:
    """The no-op task; `prev` receives the previous result inside a chain."""


def run_chain(client: Client, n: int) -> None:
    """(A) n dependent no-ops as one delayed graph; blocks for the last one's result."""
    node = delayed(noop, pure=False)()
    for _ in range(n - 1):
        node = delayed(noop, pure=False)(node)
    client.compute(node, optimize_graph=False).result()


def run_fanout(client: Client, m: int) -> None:
    """(B) m independent no-ops by client.map; blocks until every result is back."""
    client.gather(client.map(noop, range(m), pure=False))


def run_once(client: Client) -> None:
    """(C) one no-op submitted and waited for."""
    client.submit(noop, pure=False).result()


def main() -> int:
    """Starts the cluster, measures, closes it, prints the JSON line."""
    args = measure.arg_parser(__doc__).parse_args()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        result = measure.measure(
            args,
            lambda n: run_chain(client, n),
            lambda m: run_fanout(client, m),
            lambda: run_once(client),
        )
    result["version"] = {name: version(name) for name in ("dask", "distributed")}
    result["workers"] = WORKERS_TEXT
    measure.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
