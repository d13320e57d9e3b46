"""HTTP (FastAPI): health, readiness, Raft and cluster views, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeorch.controlplane.metrics import Metrics
from pipeorch.controlplane.service import ControlPlane
from pipeorch.core.runs import Run, Task, progress, started_at
from pipeorch.core.spec import InvalidPipeline
from pipeorch.core.state import State
from pipeorch.errors import Conflict, InvalidInput, NotFound, PipeorchError, Unavailable

_HTTP_STATUS: dict[type[PipeorchError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
}


def _error_body(error: PipeorchError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(error).__name__, "message": str(error)}
    if isinstance(error, InvalidPipeline):
        body["errors"] = [{"field": e.path, "message": e.message} for e in error.errors]
    elif isinstance(error, InvalidInput):
        body["errors"] = [{"field": error.field, "message": error.problem}]
    return body


def task_json(task: Task) -> dict[str, Any]:
    data = task.to_dict()
    data.pop("depends_on", None)
    data["dependsOn"] = list(task.depends_on)
    return data


def run_json(run: Run, tasks: Sequence[Task]) -> dict[str, Any]:
    """A pipeline as JSON (a ``Render``: ``task_json`` copies each task's fields)."""
    return {
        "name": run.name,
        "phase": run.phase.value,
        "progress": progress(tasks),
        "message": run.message,
        "submittedAt": run.submitted_at,
        "startedAt": started_at(tasks),
        "finishedAt": run.finished_at,
        "submissionKey": run.submission_key,
        "tasks": [task_json(t) for t in tasks],
    }


def tasks_json(run: Run, tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """A pipeline's tasks as JSON (a ``Render``)."""
    return [task_json(t) for t in tasks]


async def _store_health(endpoint: str | None) -> str:
    if not endpoint:
        return "not configured"
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            response = await client.get(f"http://{endpoint}/minio/health/live")
    except httpx.HTTPError as e:
        return f"unreachable ({type(e).__name__})"
    return "ok" if response.status_code == 200 else f"unhealthy (HTTP {response.status_code})"


def create_app(
    control: ControlPlane, metrics: Metrics, region: str, store_endpoint: str | None = None
) -> FastAPI:
    app = FastAPI(title="pipeline-orchestrator control plane", docs_url="/docs")
    node = control.node

    @app.exception_handler(PipeorchError)
    async def _pipeorch_error(request: Request, error: PipeorchError) -> JSONResponse:
        status = next((c for kind, c in _HTTP_STATUS.items() if isinstance(error, kind)), 500)
        return JSONResponse(_error_body(error), status_code=status)

    @app.post("/pipelines", status_code=201)
    async def submit(request: Request, response: Response, wait: float = 0.0) -> dict[str, Any]:
        """Submit a Pipeline document (YAML or JSON body). 201 when created, 200 when a
        pipeline of that name already existed (nothing new runs). With ``?wait=SECONDS``, the
        answer waits until the pipeline finishes or that many seconds pass."""
        key = request.headers.get("x-submission-key", "")
        name, created = await control.submit(await request.body(), key)
        response.status_code = 201 if created else 200
        return await control.watch(name, run_json, wait, until_finished=True)

    @app.get("/pipelines")
    def pipelines() -> list[dict[str, Any]]:
        return control.render_all(run_json)

    @app.get("/pipelines/{name}")
    def pipeline(name: str) -> dict[str, Any]:
        return control.render(name, run_json)

    @app.get("/pipelines/{name}/tasks")
    def pipeline_tasks(name: str) -> list[dict[str, Any]]:
        return control.render(name, tasks_json)

    @app.post("/pipelines/{name}/cancel")
    async def cancel(name: str) -> dict[str, Any]:
        await control.cancel(name)
        return control.render(name, run_json)

    @app.get("/tasks/{ref}")
    def task(ref: str) -> dict[str, Any]:
        return task_json(control.task(ref))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The process is up (always 200), with the state of each dependency."""
        status = node.status()
        return {
            "status": "ok",
            "node": status.node_id,
            "dependencies": {
                "quorum": "ok" if status.has_quorum else "unreachable",
                "leader": status.leader_id or "none",
                "object_store": await _store_health(store_endpoint),
            },
        }

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready when a quorum is reachable and this replica has caught up with the leader."""
        status = node.status()
        body = {
            "ready": status.caught_up(),
            "leader": status.leader_id,
            "has_quorum": status.has_quorum,
            "applied_index": status.applied_index,
            "leader_commit_index": status.leader_commit_index,
        }
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/raft")
    def raft() -> dict[str, Any]:
        """This replica's Raft view: state, leader, term, indexes and each peer's connection."""
        status = node.status(with_digest=True)
        body = asdict(status)
        body["region"] = region
        body["leader"] = status.leader_id
        return body

    @app.get("/cluster")
    def cluster() -> dict[str, Any]:
        """Workers by region and status, as this replica has applied them, and which of them
        wait on this replica for work now (worker id -> idle slots)."""
        status = node.status()
        return {
            "served_by": status.node_id,
            "leader": status.leader_id,
            "revision": status.revision,
            "regions": node.read(_regions),
            "waiting_for_work": dict(sorted(control.waiting.items())),
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _regions(state: State) -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {
        region: {
            status: [
                {
                    "worker_id": w.worker_id,
                    "address": w.address,
                    "last_heartbeat": w.last_heartbeat,
                    "registered_at": w.registered_at,
                    "heartbeat_interval": w.heartbeat_interval,
                }
                for w in workers
            ]
            for status, workers in by_status.items()
        }
        for region, by_status in state.workers_by_region().items()
    }
