"""Peer benchmarks: Celery (Redis), Dask distributed and Ray on this machine, for comparison.

`python -m bench.peers` measures them (see README.md); `load_peers()` reads the figures back.
Kept free of heavy imports: importing this package loads only json and pathlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).resolve().parent.parent / "results" / "peers-loopback.json"


def load_peers() -> dict[str, Any]:
    """The last peers run as written by `python -m bench.peers`, or {} if there has been none.

    Shape: {"when": ISO time, "machine": {"cpus": N}, "peers": {"celery": {...}, ...}}.
    """
    if not RESULTS_FILE.exists():
        return {}
    loaded: dict[str, Any] = json.loads(RESULTS_FILE.read_text())
    return loaded
