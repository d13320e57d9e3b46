"""The worker as a process: the agent loop plus a small HTTP server for /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import asdict
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from pipeorch.settings import WorkerSettings
from pipeorch_worker.agent import WorkerAgent
from pipeorch_worker.runner import StepRunner
from pipeorch_worker.store import ArtifactStore

log = logging.getLogger(__name__)


def create_app(agent: WorkerAgent, heartbeat_interval: float) -> FastAPI:
    app = FastAPI(title="pipeline-orchestrator worker")

    @app.get("/healthz")
    def healthz() -> Response:
        """Healthy while the agent runs and its last heartbeat is recent (3 intervals)."""
        body: dict[str, Any] = asdict(agent.status)
        last = agent.status.last_heartbeat_ok
        body["heartbeat_age_seconds"] = None if last is None else round(time.time() - last, 3)
        fresh = last is not None and time.time() - last < 3 * heartbeat_interval
        body["status"] = "ok" if fresh else "degraded"
        body["warm_step_hosts"] = agent.runner.warm_hosts if agent.runner else 0
        # The process itself is alive either way; a degraded agent keeps retrying its replicas.
        return JSONResponse(body)

    return app


def build_runner(settings: WorkerSettings) -> StepRunner | None:
    """A step runner over the configured object store, or None when there is none."""
    if not settings.store_endpoint:
        return None
    store = ArtifactStore(
        settings.store_endpoint,
        settings.store_access_key.get_secret_value() if settings.store_access_key else "",
        settings.store_secret_key.get_secret_value() if settings.store_secret_key else "",
        settings.store_bucket,
        secure=settings.store_secure,
    )
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    warm = settings.slots if settings.warm_step_hosts else 0
    return StepRunner(store, settings.work_dir, settings.code_path, warm_hosts=warm)


async def serve(settings: WorkerSettings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stopping.set))

    runner = build_runner(settings)
    agent = WorkerAgent(settings, address=settings.http_listen, runner=runner)
    host, port = settings.http_listen.rsplit(":", 1)
    http = uvicorn.Server(
        uvicorn.Config(
            create_app(agent, settings.heartbeat_interval),
            host=host,
            port=int(port),
            log_config=None,
            lifespan="off",
            access_log=False,
        )
    )
    tasks = {
        asyncio.create_task(agent.run()),
        asyncio.create_task(http.serve()),
        asyncio.create_task(stopping.wait()),
    }
    log.info("worker %s (%s) starting", agent.worker_id, settings.region)
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    http.should_exit = True
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    await agent.close()
    if runner is not None:
        await runner.close()
    for task in done:  # surface a fatal agent error (e.g. a refused registration)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
