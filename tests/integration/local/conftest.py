"""Fixtures for the local mode: the default three-region layout with real latency between its
regions, given by a real toxiproxy gateway, and real replica, worker and MinIO processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeorch.local.cluster import LocalCluster
from pipeorch.local.up import load_regions

from ...conftest import failed
from ..conftest import assert_replicas_agree

#: The built-in layout (examples/regions.yaml): aws-gcp 50 ms, aws-azure 75, gcp-azure 125.
LAYOUT = load_regions(None)


def run_cluster(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    try:
        with cluster.logs_on_failure():
            cluster.start()
        yield cluster
        if failed(request):
            cluster.dump_logs()
        assert_replicas_agree(cluster)
    finally:
        cluster.stop()


@pytest.fixture
def wan(tmp_path, request) -> Iterator[LocalCluster]:
    """One replica per region (aws, gcp, azure), Raft across the latency gateway, no store."""
    yield from run_cluster(
        LocalCluster.from_layout(tmp_path / "cluster", LAYOUT, with_store=False), request
    )


@pytest.fixture
def wan_with_store(tmp_path, request) -> Iterator[LocalCluster]:
    """The same, with MinIO in aws (the layout's object-store region); no workers yet."""
    yield from run_cluster(LocalCluster.from_layout(tmp_path / "cluster", LAYOUT), request)
