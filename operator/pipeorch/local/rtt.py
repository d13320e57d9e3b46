"""Measure the round trips a latency gateway really gives, and print them beside the configured.

Each directed link (from region A to a service in region B) is timed with small HTTP requests
through the gateway's proxy for that link: one request and its response cross the link once
each way, which is one round trip. The target is a replica's ``/readyz``, which only reads local
state (``/healthz`` would also probe the object store, possibly across another link).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from pipeorch.errors import GatewayError
from pipeorch.local.gateway import LatencyGateway

#: region -> (service name, HTTP HOST:PORT of a service living in that region)
Targets = dict[str, tuple[str, str]]
Matrix = dict[tuple[str, str], float]


def measure_matrix(
    gateway: LatencyGateway, targets: Targets, samples: int = 10, path: str = "/readyz"
) -> Matrix:
    """Median round trip in ms of every directed link between the targets' regions."""
    links = {
        (a, b): gateway.proxy(a, name, address, b)
        for a in targets
        for b, (name, address) in targets.items()
        if a != b
    }
    # Links are timed concurrently: each one spends its time waiting in the gateway.
    with ThreadPoolExecutor(max_workers=max(1, len(links))) as pool:
        futures = {
            link: pool.submit(median_round_trip, f"http://{address}{path}", samples)
            for link, address in links.items()
        }
        return {link: future.result() for link, future in futures.items()}


def median_round_trip(url: str, samples: int = 10) -> float:
    """Median ms of ``samples`` HTTP requests to ``url`` over one kept-open connection."""
    try:
        with httpx.Client(timeout=5.0) as client:
            client.get(url)  # open the connection first: only request and response are timed
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                client.get(url)
                times.append((time.perf_counter() - started) * 1000)
    except httpx.HTTPError as e:
        raise GatewayError(f"cannot measure the round trip to {url}: {e}") from e
    return statistics.median(times)


def format_matrix(
    regions: list[str], measured: Matrix, configured: Callable[[str, str], float]
) -> str:
    """A table: one row per source region, each cell ``measured (configured)`` in ms."""
    width = max(15, *(len(r) + 2 for r in regions))
    corner = "FROM / TO"
    lines = [(f"{corner:<10}" + "".join(f"{r:<{width}}" for r in regions)).rstrip()]
    for a in regions:
        cells = [
            "direct" if a == b else f"{measured[(a, b)]:.1f} ({configured(a, b):g})"
            for b in regions
        ]
        lines.append(f"{a:<10}" + "".join(f"{cell:<{width}}" for cell in cells).rstrip())
    return "\n".join(lines)
