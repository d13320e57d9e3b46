"""A control plane, workers in three regions and a real MinIO server, as processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc
from pipeorch_worker.store import ArtifactStore

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
        self._channel = grpc.insecure_channel(cluster.replicas["cp-0"].grpc)
        self.control = pb_grpc.ControlServiceStub(self._channel)

    def submit(self, manifest: str) -> pb.SubmitPipelineResponse:
        return self.control.SubmitPipeline(pb.SubmitPipelineRequest(manifest=manifest), timeout=10)

    def status(self, name: str) -> pb.PipelineStatus:
        return self.control.GetPipeline(pb.GetPipelineRequest(name=name), timeout=10)

    def wait_finished(self, name: str, timeout: float = 60) -> pb.PipelineStatus:
        def finished() -> pb.PipelineStatus | None:
            try:
                status = self.status(name)
            except grpc.RpcError:
                return None  # e.g. cp-0 is the replica a test killed
            return status if status.phase in ("Succeeded", "Failed", "Cancelled") else None

        return wait_until(finished, timeout, interval=0.1, what=f"pipeline {name} finished")

    def output(self, status: pb.PipelineStatus, step: str, name: str) -> bytes:
        task = next(t for t in status.tasks if t.step == step)
        artifact = next(o for o in task.outputs if o.name == name)
        return self.store.get_bytes(artifact.key)

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def pipelines(tmp_path) -> Iterator[PipelineCluster]:
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
        assert_replicas_agree(cluster)
    cluster.stop()
