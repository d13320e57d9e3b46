"""HTTP (FastAPI): health, readiness, Raft and cluster views, Prometheus metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeorch.controlplane.metrics import Metrics
from pipeorch.core.state import State
from pipeorch.raft.node import RaftNode


def create_app(node: RaftNode, metrics: Metrics, region: str) -> FastAPI:
    app = FastAPI(title="pipeline-orchestrator control plane", docs_url="/docs")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """The process is up and its Raft node is ticking."""
        return {"status": "ok", "node": node.status().node_id}

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready when a quorum is reachable and this replica has caught up with the leader."""
        status = node.status()
        body = {
            "ready": node.is_caught_up(),
            "leader": status.leader_id,
            "has_quorum": status.has_quorum,
            "applied_index": status.applied_index,
            "leader_commit_index": status.leader_commit_index,
        }
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/raft")
    def raft() -> dict[str, Any]:
        """This replica's Raft view: state, leader, term, indexes and each peer's connection."""
        status = node.status()
        body = asdict(status)
        body["region"] = region
        body["leader"] = status.leader_id
        return body

    @app.get("/cluster")
    def cluster() -> dict[str, Any]:
        """Workers by region and status, as this replica has applied them."""
        status = node.status()
        return {
            "served_by": status.node_id,
            "leader": status.leader_id,
            "revision": status.revision,
            "regions": node.read(_regions),
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
