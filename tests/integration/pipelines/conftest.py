"""A control plane, workers in three regions and a real MinIO server, as processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeorch.console import Client
from pipeorch.errors import Unavailable
from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch_worker.store import ArtifactStore

from ...conftest import failed
from ..conftest import assert_replicas_agree

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
WORKERS = {"aws": 2, "gcp": 1, "azure": 1}


class PipelineCluster:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        assert cluster.store is not None
        self.store = ArtifactStore(
            cluster.store.address,
            cluster.store.access_key,
            cluster.store.secret_key,
            cluster.store.bucket,
        )
        # The CLI's client: it fails over to the next replica when one is down (tests kill some).
        self.client = Client([r.grpc for r in cluster.replicas.values()], timeout=5)

    def submit(self, manifest: str) -> pb.SubmitPipelineResponse:
        request = pb.SubmitPipelineRequest(manifest=manifest)
        return self.client.call(lambda s, t: s.SubmitPipeline(request, timeout=t))

    def status(self, name: str) -> pb.PipelineStatus:
        request = pb.GetPipelineRequest(name=name)
        return self.client.call(lambda s, t: s.GetPipeline(request, timeout=t))

    def list(self) -> list[pb.PipelineStatus]:
        request = pb.ListPipelinesRequest()
        return list(self.client.call(lambda s, t: s.ListPipelines(request, timeout=t)).pipelines)

    def wait_finished(self, name: str, timeout: float = 60) -> pb.PipelineStatus:
        def finished() -> pb.PipelineStatus | None:
            try:
                status = self.status(name)
            except Unavailable:
                return None  # no replica answered (an election under way)
            return status if status.phase in ("Succeeded", "Failed", "Cancelled") else None

        return wait_until(finished, timeout, interval=0.1, what=f"pipeline {name} finished")

    def output(self, status: pb.PipelineStatus, step: str, name: str) -> bytes:
        task = next(t for t in status.tasks if t.step == step)
        artifact = next(o for o in task.outputs if o.name == name)
        return self.store.get_bytes(artifact.key)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def pipelines(tmp_path, request) -> Iterator[PipelineCluster]:
    cluster = LocalCluster(
        tmp_path / "cluster",
        regions=["aws", "gcp", "azure"],
        store_region="aws",
        code_path=[EXAMPLES],
    )
    with cluster.logs_on_failure():
        cluster.start()
        for region, count in WORKERS.items():
            for i in range(count):
                cluster.add_worker(region, worker_id=f"{region}-w{i + 1}", heartbeat=0.3)
        harness = PipelineCluster(cluster)
        yield harness
        harness.close()
        if failed(request):
            cluster.dump_logs()
        assert_replicas_agree(cluster)
    cluster.stop()
