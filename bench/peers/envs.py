"""The pinned versions of each peer framework and the virtual environments they run in.

Each framework gets its own virtualenv outside the git clone, under
~/.cache/pipeorch-bench/envs/ (or $PIPEORCH_BENCH_ENVS), named after its pins, e.g.
celery-5.7.0_kombu-5.7.0_billiard-4.3.2_redis-8.1.0/. An env is made with
`uv venv --python 3.11 DIR` and `uv pip install --python DIR/bin/python PINNED...`, and
records its requirements in a stamp file written last. An env whose stamp matches is reused
at no cost; a directory without one (an interrupted install) is removed and made again.
Changing a pin names a new directory, so an old env is never patched in place.

Celery also needs a redis-server binary: the one on PATH, else Debian's redis-server package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PYTHON = "3.11"

# The frameworks and the packages they talk through, pinned exactly (PyPI, cp311 linux x86_64).
PINS: dict[str, dict[str, str]] = {
    "celery": {"celery": "5.7.0", "kombu": "5.7.0", "billiard": "4.3.2", "redis": "8.1.0"},
    "dask": {
        "dask": "2026.8.0",
        "distributed": "2026.8.0",
        "tornado": "6.6.1",
        "cloudpickle": "3.1.2",
        "msgpack": "1.2.4",
    },
    "ray": {"ray": "2.60.0", "protobuf": "7.36.2", "msgpack": "1.2.4"},
}

# Extras to install with a pinned package (kombu's Redis transport needs `packaging`).
EXTRAS: dict[str, str] = {"celery": "redis"}

ENVS_ROOT = Path(
    os.environ.get("PIPEORCH_BENCH_ENVS", Path.home() / ".cache" / "pipeorch-bench" / "envs")
)
STAMP = "pipeorch-pins.json"


def env_dir(name: str) -> Path:
    """The env's directory, named after every pin so that a changed pin makes a new env."""
    return ENVS_ROOT / "_".join(f"{pkg}-{ver}" for pkg, ver in PINS[name].items())


def env_python(name: str) -> Path:
    """The env's interpreter."""
    return env_dir(name) / "bin" / "python"


def requirements(name: str) -> list[str]:
    """What `uv pip install` gets for the framework: every pin exactly, with its extras."""
    reqs = []
    for pkg, ver in PINS[name].items():
        extra = f"[{EXTRAS[pkg]}]" if pkg in EXTRAS else ""
        reqs.append(f"{pkg}{extra}=={ver}")
    return reqs


def is_ready(name: str) -> bool:
    """True if the env exists and its stamp records exactly the current requirements."""
    stamp = env_dir(name) / STAMP
    try:
        return bool(json.loads(stamp.read_text()) == requirements(name))
    except (OSError, ValueError):
        return False


def uv(*args: str) -> None:
    """Runs uv outside the project (so it neither finds nor touches its .venv) or fails."""
    binary = shutil.which("uv")
    if binary is None:
        raise RuntimeError("uv is not on PATH")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT")}
    subprocess.run([binary, *args], cwd=ENVS_ROOT, env=env, check=True)


def create_env(name: str) -> None:
    """Makes the env from scratch: a Python 3.11 venv, the pinned packages, then the stamp."""
    target = env_dir(name)
    if target.exists():
        shutil.rmtree(target)
    ENVS_ROOT.mkdir(parents=True, exist_ok=True)
    # Only an interpreter already on this machine: nothing but wheels is downloaded.
    uv("venv", "--quiet", "--no-python-downloads", "--python", PYTHON, str(target))
    reqs = requirements(name)
    uv("pip", "install", "--quiet", "--python", str(target / "bin" / "python"), *reqs)
    (target / STAMP).write_text(json.dumps(reqs, indent=2) + "\n")


def ensure_env(name: str) -> Path:
    """The env's interpreter, creating the env first unless a matching one is already there."""
    if not is_ready(name):
        start = time.perf_counter()
        print(f"[peers] creating {env_dir(name)}", file=sys.stderr, flush=True)
        create_env(name)
        took = time.perf_counter() - start
        print(f"[peers] {name} env installed in {took:.1f}s", file=sys.stderr, flush=True)
    return env_python(name)


def ensure_redis_server() -> str:
    """The path of redis-server, installing Debian's package if it is not on PATH."""
    found = shutil.which("redis-server")
    if found:
        return found
    print("[peers] installing redis-server (apt-get)", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, check=True)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is still missing after apt-get install")
    return found
