"""A worker in gcp, with MinIO in aws: it registers and runs a pipeline through the gateway."""

from __future__ import annotations

import signal
import sys

from pipeorch.console import Client
from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch_worker.store import ArtifactStore

from ..conftest import wait_worker_status

PY = sys.executable
GENERATE = (
    "import os; out = open(os.environ['PIPEORCH_OUTPUT_NUMBERS_TXT'], 'w'); "
    "out.write(' '.join(map(str, range(1, 1001))))"
)
TOTAL = (
    "import os; numbers = open(os.environ['PIPEORCH_INPUT_GENERATE__NUMBERS_TXT']).read().split(); "
    "open(os.environ['PIPEORCH_OUTPUT_TOTAL_TXT'], 'w').write(str(sum(map(int, numbers))))"
)
MANIFEST = f"""
apiVersion: pipeorch.dev/v1alpha1
kind: Pipeline
metadata: {{name: across}}
spec:
  steps:
    - {{name: generate, command: [{PY}, -c, "{GENERATE}"], outputs: [numbers.txt]}}
    - name: total
      dependsOn: [generate]
      inputs: [generate/numbers.txt]
      outputs: [total.txt]
      command: [{PY}, -c, "{TOTAL}"]
"""


def test_a_gcp_worker_runs_a_pipeline_with_the_store_in_aws(wan_with_store: LocalCluster):
    cluster = wan_with_store
    store, gateway = cluster.store, cluster.gateway
    assert store is not None
    assert gateway is not None
    assert store.region == "aws"
    worker = cluster.add_worker("gcp", worker_id="gcp-w1", heartbeat=0.3, slots=2)
    # Its own region's replica first, then the others through the gateway.
    control_planes = [
        worker.argv[i + 1] for i, a in enumerate(worker.argv) if a == "--control-plane"
    ]
    assert control_planes[0] == cluster.replicas["cp-1"].grpc
    assert {cluster.replicas[n].grpc for n in ("cp-0", "cp-2")}.isdisjoint(control_planes[1:])
    for node_id in cluster.replicas:
        wait_worker_status(cluster, node_id, "gcp-w1", "online", timeout=30)

    client = Client([cluster.replicas["cp-1"].grpc], timeout=10)
    try:
        client.call(
            lambda s, t: s.SubmitPipeline(pb.SubmitPipelineRequest(manifest=MANIFEST), timeout=t)
        )

        def finished() -> pb.PipelineStatus | None:
            status = client.call(
                lambda s, t: s.GetPipeline(pb.GetPipelineRequest(name="across"), timeout=t)
            )
            return status if status.phase in ("Succeeded", "Failed", "Cancelled") else None

        status = wait_until(finished, 60, interval=0.1, what="pipeline across finished")
    finally:
        client.close()
    assert status.phase == "Succeeded", status
    assert {(t.step, t.region, t.worker_id) for t in status.tasks} == {
        ("generate", "gcp", "gcp-w1"),
        ("total", "gcp", "gcp-w1"),
    }
    total = next(t for t in status.tasks if t.step == "total")
    artifacts = ArtifactStore(store.address, store.access_key, store.secret_key, store.bucket)
    assert artifacts.get_bytes(total.outputs[0].key) == b"500500"

    # The worker's store traffic crossed the gateway: its link to MinIO carried the artifacts
    # (toxiproxy counts a connection's bytes when it closes, hence the worker stops first).
    worker.kill(signal.SIGTERM)
    sizes = sum(o.size_bytes for t in status.tasks for o in t.outputs)
    carried = gateway.carried_bytes()
    assert carried[("gcp", "minio")] > sizes, carried
