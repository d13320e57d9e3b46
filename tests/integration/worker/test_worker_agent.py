"""Real worker processes against a real 3-replica control plane."""

from __future__ import annotations

import httpx

from pipeorch.local.cluster import LocalCluster, wait_until

from ..conftest import wait_worker_status, workers_seen_by


def healthz(worker) -> dict:
    return httpx.get(f"http://{worker.http}/healthz", timeout=2).json()


def offline_count(cluster: LocalCluster, node_id: str, region: str) -> float:
    text = httpx.get(f"http://{cluster.replicas[node_id].http}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(f'workers_marked_offline_total{{region="{region}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_worker_offline_after_missed_heartbeats_and_online_on_return(cluster: LocalCluster):
    worker = cluster.add_worker("gcp", worker_id="gcp-w1", heartbeat=0.3)
    wait_worker_status(cluster, "cp-0", "gcp-w1", "online")
    leader = cluster.wait_for_leader()

    worker.kill()
    wait_worker_status(cluster, "cp-1", "gcp-w1", "offline", timeout=10)
    assert offline_count(cluster, leader, "gcp") == 1.0

    worker.start()
    wait_worker_status(cluster, "cp-2", "gcp-w1", "online", timeout=10)
    wait_until(lambda: healthz(worker)["status"] == "ok", 10, what="worker healthy")


def test_worker_talks_to_the_leader_and_fails_over_when_it_dies(cluster: LocalCluster):
    leader = cluster.wait_for_leader()
    followers_first = [n for n in cluster.replicas if n != leader] + [leader]
    worker = cluster.add_worker("aws", worker_id="aws-w1", heartbeat=0.3, replicas=followers_first)
    # Configured behind both followers, the leader is still where it ends up talking.
    wait_until(lambda: healthz(worker)["replica"] == cluster.replicas[leader].grpc, 10)

    cluster.kill_replica(leader)
    wait_until(lambda: healthz(worker)["failovers"] >= 1, 10, what="worker failed over")
    assert healthz(worker)["replica"] != cluster.replicas[leader].grpc
    # It stays online throughout: the failover is faster than three missed heartbeats.
    first = healthz(worker)["last_heartbeat_ok"]
    wait_until(lambda: healthz(worker)["last_heartbeat_ok"] > first, 5, what="heartbeats resume")
    survivors = cluster.live()
    wait_worker_status(cluster, survivors[0], "aws-w1", "online")
    # And it moves on to the new leader.
    new_leader = cluster.wait_for_leader()
    wait_until(
        lambda: healthz(worker)["replica"] == cluster.replicas[new_leader].grpc,
        10,
        what="worker on the new leader",
    )


def test_restarted_worker_reregisters_under_its_stable_id(cluster: LocalCluster):
    worker = cluster.add_worker("azure", heartbeat=0.3)  # no id given: generated and kept
    worker_id = wait_until(
        lambda: healthz(worker)["registered"] and healthz(worker)["worker_id"], 10
    )
    assert worker_id.startswith("azure-")
    first_seen = workers_seen_by(cluster, "cp-0")
    assert first_seen.get(worker_id) == "online"

    worker.kill()
    worker.start()
    wait_until(lambda: healthz(worker)["registered"], 10, what="worker re-registered")
    assert healthz(worker)["worker_id"] == worker_id
    assert list(workers_seen_by(cluster, "cp-1")) == [worker_id]  # one worker, not two
