"""Raft across three regions through the latency gateway: a stable leader at the default round
trips, commits that pay a real round trip, and a cut region that loses the leadership."""

from __future__ import annotations

import statistics
import time

import grpc

from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

from ..conftest import workers_seen_by
from .conftest import LAYOUT

STABLE_FOR = 60.0


def register(cluster: LocalCluster, node_id: str, worker_id: str, region: str) -> float:
    """Register a worker through ``node_id`` (one replicated write); seconds it took."""
    with grpc.insecure_channel(cluster.replicas[node_id].grpc) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        request = pb.RegisterRequest(
            worker_id=worker_id, region=region, heartbeat_interval_seconds=60
        )
        stub.Register(request, timeout=10)  # the channel connects before the timed write
        started = time.perf_counter()
        stub.Register(request, timeout=10)
        return time.perf_counter() - started


def leadership(cluster: LocalCluster) -> dict[str, tuple[int, str | None, str]]:
    return {n: (v["term"], v["leader"], v["state"]) for n, v in cluster.views().items()}


def test_leader_elected_commits_and_holds_for_60s_at_the_default_round_trips(wan: LocalCluster):
    leader = wan.wait_for_leader()
    follower = max(wan.followers(), key=lambda n: LAYOUT.rtt_ms(wan.replicas[n].region, "aws"))
    register(wan, follower, "far-worker", wan.replicas[follower].region)
    for node_id in wan.replicas:
        wait_until(lambda n=node_id: "far-worker" in workers_seen_by(wan, n), 5, what=node_id)

    before = leadership(wan)
    assert {term for term, _, _ in before.values()} == {before[leader][0]}
    deadline = time.monotonic() + STABLE_FOR
    while time.monotonic() < deadline:
        now = leadership(wan)
        assert now == before, f"leadership changed: {before} -> {now}"
        time.sleep(1.0)
    views = wan.views()
    assert all(p["connected"] for v in views.values() for p in v["peers"]), views


def test_a_commit_at_the_leader_waits_for_the_nearest_follower_across_the_gateway(
    wan: LocalCluster,
):
    leader = wan.wait_for_leader()
    region = wan.replicas[leader].region
    nearest = min(
        LAYOUT.rtt_ms(region, r.region) for r in wan.replicas.values() if r.region != region
    )
    seconds = [register(wan, leader, f"w{i}", region) for i in range(7)]
    # Unbatched Raft: one round trip to the nearest follower. Far below it, Raft bypassed the
    # gateway; far above, the writes waited for something else (a heartbeat tick, a timeout).
    assert 0.8 * nearest <= statistics.median(seconds) * 1000 <= nearest + 60, seconds


def test_cutting_the_leaders_region_off_moves_the_leadership_and_healing_rejoins_it(
    wan: LocalCluster,
):
    old = wan.wait_for_leader()
    old_term = wan.raft(old)["term"]
    assert wan.gateway is not None
    wan.gateway.disable_links(wan.replicas[old].region)
    others = [n for n in wan.replicas if n != old]

    def new_leader() -> str | None:
        views = {n: wan.raft(n) for n in others}
        leaders = {v["leader"] for v in views.values()}
        if len(leaders) == 1 and None not in leaders and old not in leaders:
            (leader,) = leaders
            return str(leader)
        return None

    moved_to = wait_until(new_leader, 15, what="a leader among the two connected regions")
    assert wan.raft(moved_to)["term"] > old_term
    register(wan, moved_to, "during-cut", wan.replicas[moved_to].region)

    wan.gateway.enable_links(wan.replicas[old].region)
    wan.wait_for_leader(timeout=15)  # whichever replica: the cut one may force an election
    assert wan.raft(old)["term"] > old_term
    wait_until(
        lambda: "during-cut" in workers_seen_by(wan, old), 10, what="the cut replica caught up"
    )
