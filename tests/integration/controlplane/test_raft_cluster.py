"""The replicated control plane on three real processes: leadership, replication, failover,
restarts and minorities."""

from __future__ import annotations

import grpc
import pytest

from pipeorch.console import Client
from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb

from ..conftest import workers_seen_by


def register(stub, worker_id: str, region: str = "aws", timeout: float = 5.0):
    return stub.Register(
        pb.RegisterRequest(worker_id=worker_id, region=region, heartbeat_interval_seconds=30),
        timeout=timeout,
    )


def test_exactly_one_leader_that_every_replica_names(cluster: LocalCluster):
    leader = cluster.wait_for_leader()
    views = cluster.views()
    assert [n for n, v in views.items() if v["state"] == "leader"] == [leader]
    assert {v["leader"] for v in views.values()} == {leader}
    assert len({v["term"] for v in views.values()}) == 1
    # Links that lost the race with a peer's start are redialled within connection_retry.
    wait_until(
        lambda: all(p["connected"] for v in cluster.views().values() for p in v["peers"]),
        5,
        what="every replica connected to both peers",
    )


def test_a_write_through_a_follower_reaches_every_replica(cluster: LocalCluster, stubs):
    follower = cluster.followers()[0]
    response = register(stubs[follower], "aws-1")
    assert response.served_by == follower
    assert response.leader == cluster.wait_for_leader()
    assert not response.reregistered
    for node_id in cluster.replicas:
        wait_until(lambda n=node_id: "aws-1" in workers_seen_by(cluster, n), 5, what=node_id)


def test_leader_sigkill_new_leader_commits_and_old_replica_catches_up(cluster: LocalCluster, stubs):
    register(stubs["cp-0"], "before-kill")
    old_leader = cluster.wait_for_leader()
    old_term = cluster.raft(old_leader)["term"]

    cluster.kill_replica(old_leader)
    new_leader = cluster.wait_for_leader(timeout=10)
    assert new_leader != old_leader
    survivor = cluster.followers()[0]
    register(stubs[survivor], "after-kill")  # commits with one replica down
    assert cluster.raft(new_leader)["term"] > old_term

    cluster.restart_replica(old_leader)
    wait_until(
        lambda: {"before-kill", "after-kill"} <= set(workers_seen_by(cluster, old_leader)),
        15,
        what="restarted replica caught up",
    )
    assert cluster.raft(old_leader)["state"] == "follower"


def test_a_minority_cannot_commit_and_names_the_last_leader(cluster: LocalCluster, stubs):
    leader = cluster.wait_for_leader()
    lonely = cluster.followers()[0]
    for node_id in cluster.replicas:
        if node_id != lonely:
            cluster.kill_replica(node_id)

    with pytest.raises(grpc.RpcError) as error:
        register(stubs[lonely], "stranded", timeout=15)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"last known leader: {leader}" in error.value.details()

    readyz = cluster._http.get(f"http://{cluster.replicas[lonely].http}/readyz")
    assert readyz.status_code == 503
    assert "stranded" not in workers_seen_by(cluster, lonely)


def test_all_replicas_killed_and_restarted_lose_nothing(cluster: LocalCluster, stubs):
    names = [f"w-{i}" for i in range(20)]
    for i, name in enumerate(names):
        register(stubs[f"cp-{i % 3}"], name, region=("aws", "gcp", "azure")[i % 3])
    before = cluster.wait_converged()

    for node_id in cluster.replicas:
        cluster.kill_replica(node_id)
    for node_id in cluster.replicas:
        cluster.replicas[node_id].start()
    cluster.wait_for_leader()

    for node_id in cluster.replicas:
        wait_until(
            lambda n=node_id: set(names) <= set(workers_seen_by(cluster, n)), 15, what=node_id
        )
    after = cluster.wait_converged()
    assert {v["revision"] for v in after.values()} >= {v["revision"] for v in before.values()}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"worker_id": "", "region": "aws", "heartbeat_interval_seconds": 1}, "worker_id"),
        ({"worker_id": "Bad_Id", "region": "aws", "heartbeat_interval_seconds": 1}, "worker_id"),
        ({"worker_id": "w1", "region": "", "heartbeat_interval_seconds": 1}, "region"),
        ({"worker_id": "w1", "region": "aws"}, "heartbeat_interval_seconds"),
        (
            {"worker_id": "w1", "region": "aws", "heartbeat_interval_seconds": -3},
            "heartbeat_interval_seconds",
        ),
    ],
)
def test_bad_register_input_is_invalid_argument_naming_the_field(
    cluster: LocalCluster, stubs, request_fields, field
):
    with pytest.raises(grpc.RpcError) as error:
        stubs["cp-1"].Register(pb.RegisterRequest(**request_fields), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(f"{field}:")


def test_heartbeat_from_an_unknown_worker_is_not_found(cluster: LocalCluster, stubs):
    with pytest.raises(grpc.RpcError) as error:
        stubs["cp-0"].Heartbeat(pb.HeartbeatRequest(worker_id="ghost"), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        stubs["cp-0"].Heartbeat(pb.HeartbeatRequest(worker_id="NOT VALID"), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cluster_state_rpc_and_http_views_agree(cluster: LocalCluster, stubs, control):
    register(stubs["cp-2"], "gcp-1", region="gcp")
    views = cluster.wait_converged()
    state = control["cp-0"].ClusterState(pb.ClusterStateRequest(), timeout=5)
    assert state.node_id == "cp-0"
    assert state.leader == cluster.wait_for_leader()
    assert [w.worker_id for w in state.workers] == ["gcp-1"]
    assert state.state_digest == views["cp-0"]["digest"]
    assert {p.node_id for p in state.peers} == {"cp-1", "cp-2"}
    # Brief: the role, leader and term a client needs to find the leader, nothing costly.
    brief = control["cp-0"].ClusterState(pb.ClusterStateRequest(brief=True), timeout=5)
    assert (brief.node_id, brief.leader, brief.term) == ("cp-0", state.leader, state.term)
    assert brief.raft_state == state.raft_state
    assert not brief.workers
    assert not brief.peers
    assert not brief.state_digest
    metrics = cluster._http.get(f"http://{cluster.replicas['cp-0'].http}/metrics").text
    assert 'workers{region="gcp",status="online"} 1.0' in metrics
    assert "raft_applied_truncations_total 0.0" in metrics
    assert "raft_commit_latency_seconds_count" in metrics


def proposed_commands(cluster: LocalCluster) -> dict[str, float]:
    """Commands each replica has proposed (its group commit's batch-size histogram sum)."""
    counts = {}
    for node_id, replica in cluster.replicas.items():
        text = cluster._http.get(f"http://{replica.http}/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("raft_commit_batch_commands_sum"))
        counts[node_id] = float(line.split()[-1])
    return counts


def test_the_client_sends_its_writes_to_the_leader(cluster: LocalCluster):
    leader = cluster.wait_for_leader()
    followers = [n for n in cluster.replicas if n != leader]
    client = Client([cluster.replicas[n].grpc for n in [*followers, leader]])
    manifest = (
        '{"apiVersion": "pipeorch.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"},'
        ' "spec": {"steps": [{"name": "one", "run": "m:f"}]}}'
    )
    before = proposed_commands(cluster)
    try:
        client.call(
            lambda s, t: s.SubmitPipeline(pb.SubmitPipelineRequest(manifest=manifest), timeout=t)
        )
    finally:
        client.close()
    after = proposed_commands(cluster)
    # Configured behind both followers, yet the leader proposed the write: no follower hop.
    assert after[leader] > before[leader]
    assert all(after[n] == before[n] for n in followers)


def test_a_cluster_that_fails_to_start_stops_what_it_started(tmp_path, monkeypatch):
    local = LocalCluster(tmp_path / "failing", store_region="local")
    started = []

    def no_leader(timeout: float = 20.0) -> str:
        # By now MinIO and the three replicas run.
        started.extend(p.popen for p in [local.store, *local.replicas.values()] if p and p.popen)
        raise TimeoutError("a leader all live replicas agree on not reached")

    monkeypatch.setattr(local, "wait_for_leader", no_leader)
    with pytest.raises(TimeoutError), local:
        pass
    assert len(started) == 4
    assert [p.poll() is not None for p in started] == [True] * 4  # none outlives the failure
