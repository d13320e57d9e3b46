"""How the long-lived servers (replica, worker) run their coroutine."""

from __future__ import annotations

import asyncio
import gc

from pipeorch.cli import _serve


def test_a_server_runs_on_uvloop_with_start_up_objects_frozen():
    seen = {}

    async def server() -> None:
        seen["loop"] = type(asyncio.get_running_loop()).__module__
        seen["frozen"] = gc.get_freeze_count()

    try:
        _serve(server())
    finally:
        gc.unfreeze()
    assert seen["loop"].startswith("uvloop")
    # Start-up's objects are out of the collector's passes (thousands in any interpreter).
    assert seen["frozen"] > 10_000
