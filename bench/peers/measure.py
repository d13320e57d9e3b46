"""The three measurements every peer script makes, written once so they stay identical.

Standard library only: each peer script runs with its own framework's virtual environment,
which has neither pipeorch nor this repository's dependencies, and imports this module from
its own folder (a script's folder is first on sys.path).

(A) chain: N dependent no-op tasks submitted as one graph; seconds per step.
(B) fan-out: M independent no-op tasks; steps per second until every result is back.
(C) round trip: one no-op task submitted and waited for, K times; p50 and p99 in ms.

A and B do one warm-up run and report the median of three timed runs; C warms up 20 times.
The percentile is the same nearest-rank one as bench/raft_bench.py's, so figures compare.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

WARMUP_RUNS = 1
TIMED_RUNS = 3
ROUNDTRIP_WARMUP = 20


def exit_on_sigterm() -> None:
    """Turns SIGTERM into SystemExit, so that a script told to stop runs its cleanup first."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def arg_parser(description: str | None) -> argparse.ArgumentParser:
    """The sizes every peer script takes, with the same defaults as the driver's.

    Also makes SIGTERM stop the script cleanly, as every script starts by calling this.
    """
    exit_on_sigterm()
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chain", type=int, default=50, help="steps in the chain (A)")
    parser.add_argument("--fanout", type=int, default=1000, help="tasks in the fan-out (B)")
    parser.add_argument("--roundtrips", type=int, default=200, help="timed round trips (C)")
    return parser


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, as bench/raft_bench.py computes it."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(run: Callable[[], object]) -> float:
    """Wall seconds of one run: from just before submit until its results are back."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def median_seconds(run: Callable[[], object]) -> float:
    """Median wall time of TIMED_RUNS runs, after WARMUP_RUNS untimed ones."""
    for _ in range(WARMUP_RUNS):
        run()
    return statistics.median(timed(run) for _ in range(TIMED_RUNS))


def roundtrip_ms(run: Callable[[], object], count: int) -> tuple[float, float]:
    """p50 and p99 in ms of `count` one-task round trips, after ROUNDTRIP_WARMUP untimed ones."""
    for _ in range(ROUNDTRIP_WARMUP):
        run()
    samples = [timed(run) * 1000 for _ in range(count)]
    return pct(samples, 0.50), pct(samples, 0.99)


def measure(
    args: argparse.Namespace,
    chain: Callable[[int], object],
    fanout: Callable[[int], object],
    once: Callable[[], object],
) -> dict[str, Any]:
    """Runs A, B and C with a framework's callables and returns the figures the driver keeps.

    chain(n) and fanout(m) must submit their tasks and block until the final results are
    back at the client; once() submits one no-op task and blocks for its result.
    """
    chain_s = median_seconds(lambda: chain(args.chain))
    fanout_s = median_seconds(lambda: fanout(args.fanout))
    p50, p99 = roundtrip_ms(once, args.roundtrips)
    return {
        "chain_steps": args.chain,
        "chain_seconds_per_step": chain_s / args.chain,
        "fanout_steps": args.fanout,
        "fanout_steps_per_second": args.fanout / fanout_s,
        "roundtrip_p50_ms": p50,
        "roundtrip_p99_ms": p99,
    }


def emit(result: dict[str, Any]) -> None:
    """Prints the result as the last line of stdout: the driver reads only that line."""
    print(json.dumps(result), flush=True)
