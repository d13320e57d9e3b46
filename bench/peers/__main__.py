"""Measures Celery (Redis), Dask distributed and Ray on this machine, for comparison.

For each framework: make or reuse its pinned env (envs.py), run its standalone script with
that env's python in a process group of its own, read the JSON object on the last line of its
stdout, and finally write bench/results/peers-loopback.json and print a table beside
pipeorch's own figures (bench/results/pipelines-loopback.json, if present). One framework
runs at a time. Whatever a script leaves running when it exits, or when it overruns its time,
is killed through that process group, so no process and no port outlives the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.peers import RESULTS_FILE, envs, load_peers

HERE = Path(__file__).resolve().parent
PEERS = ("celery", "dask", "ray")
LOGS = envs.ENVS_ROOT.parent / "logs"
# Variables of the project's own environment that must not leak into a peer's interpreter.
DROPPED_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Which frameworks to run and the sizes of the three measurements."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--only", default=",".join(PEERS), help="comma-separated subset")
    parser.add_argument("--chain", type=int, default=50, help="steps in the chain (A)")
    parser.add_argument("--fanout", type=int, default=1000, help="tasks in the fan-out (B)")
    parser.add_argument("--roundtrips", type=int, default=200, help="timed round trips (C)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per framework")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(PEERS)
    if unknown:
        parser.error(f"unknown framework(s): {', '.join(sorted(unknown))}")
    return args


def script_argv(name: str, args: argparse.Namespace) -> list[str]:
    """The script's command line: its sizes, and for Celery the redis-server to start."""
    argv = [str(HERE / f"{name}_bench.py"), f"--chain={args.chain}"]
    argv += [f"--fanout={args.fanout}", f"--roundtrips={args.roundtrips}"]
    if name == "celery":
        argv.append(f"--redis-server={envs.ensure_redis_server()}")
    return argv


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def reap_group(pgid: int, name: str) -> None:
    """Kills whatever the script left behind in its process group and waits until it is gone."""
    strays = group_members(pgid)
    if strays:
        print(f"[peers] {name}: killing {len(strays)} stray process(es)", file=sys.stderr)
    deadline = time.monotonic() + 15
    while strays and time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)
        strays = group_members(pgid)
    if strays:
        raise RuntimeError(f"{name}: processes {strays} survived SIGKILL")


def stop_script(proc: subprocess.Popen[str]) -> None:
    """SIGTERM first, so the script stops what it started; SIGKILL if it takes over 30 s."""
    proc.terminate()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def run_script(name: str, python: Path, argv: list[str], timeout: float) -> dict[str, Any]:
    """Runs one peer script to completion and returns the JSON object of its last stdout line."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(python), *argv],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=HERE,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_script(proc)
            raise RuntimeError(f"{name}: no result within {timeout:.0f}s; see {log_path}") from None
        finally:
            reap_group(proc.pid, name)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{name}: exit {proc.returncode}; {log_path} ends:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def pinned_version(name: str, reported: dict[str, str]) -> dict[str, str]:
    """The env's pins, after checking they are what the script found installed."""
    pins = envs.PINS[name]
    wrong = {pkg: ver for pkg, ver in reported.items() if pins.get(pkg, ver) != ver}
    if wrong:
        raise RuntimeError(f"{name}: installed {wrong} differ from the pins {pins}")
    return dict(pins)


def measure_peer(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Ensures the env, runs the script, and returns its figures with the pinned versions."""
    python = envs.ensure_env(name)
    print(f"[peers] {name}: running", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = run_script(name, python, script_argv(name, args), args.timeout)
    took = time.perf_counter() - start
    print(f"[peers] {name}: done in {took:.0f}s", file=sys.stderr, flush=True)
    result["version"] = pinned_version(name, result.get("version", {}))
    return result


def write_results(measured: dict[str, dict[str, Any]]) -> None:
    """Writes the results file; frameworks not run this time keep their previous figures."""
    peers = {**load_peers().get("peers", {}), **measured}
    doc = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count()},
        "peers": {name: peers[name] for name in PEERS if name in peers},
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_FILE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(RESULTS_FILE)


def table(peers: dict[str, dict[str, Any]]) -> str:
    """The figures side by side, with pipeorch's own last pipeline benchmark if there is one."""
    rows = dict(peers)
    ours = RESULTS_FILE.parent / "pipelines-loopback.json"
    if ours.exists():
        rows["pipeorch"] = json.loads(ours.read_text())
    head = f"{'':10}{'chain ms/step':>15}{'fan-out steps/s':>17}{'rt p50 ms':>11}{'rt p99 ms':>11}"
    lines = [head]
    for name, r in rows.items():
        lines.append(
            f"{name:10}{r['chain_seconds_per_step'] * 1000:>15.2f}"
            f"{r['fanout_steps_per_second']:>17.1f}"
            f"{r['roundtrip_p50_ms']:>11.2f}{r['roundtrip_p99_ms']:>11.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measures the selected frameworks one at a time; exits 1 if any of them failed."""
    args = parse_args(argv)
    measured: dict[str, dict[str, Any]] = {}
    failed = []
    for name in args.only:
        try:
            measured[name] = measure_peer(name, args)
        except Exception as exc:
            print(f"[peers] {name} FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
    if measured:
        write_results(measured)
        print(f"[peers] wrote {RESULTS_FILE}", file=sys.stderr)
    print(table(load_peers().get("peers", {})))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
