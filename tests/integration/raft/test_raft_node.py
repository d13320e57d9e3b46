"""RaftNode with the real pysyncobj over real sockets: three nodes in this process."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import pytest

from pipeorch.core.state import noop_cmd
from pipeorch.errors import InvalidInput
from pipeorch.local.cluster import LOOPBACK_TIMING, free_ports, wait_until
from pipeorch.raft.commit import MAX_COMMAND_BYTES
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings, RaftTiming


@pytest.fixture
def nodes(tmp_path) -> Iterator[dict[str, RaftNode]]:
    members = {f"cp-{i}": f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    group = {
        node_id: RaftNode(
            ControlPlaneSettings(
                node_id=node_id,
                members=members,
                data_dir=tmp_path / node_id,
                raft=RaftTiming(**LOOPBACK_TIMING),
            )
        )
        for node_id in members
    }
    yield group
    for node in group.values():
        node.destroy()


def leader_of(nodes: dict[str, RaftNode]) -> RaftNode:
    def find() -> RaftNode | None:
        leaders = [n for n in nodes.values() if n.is_leader()]
        return leaders[0] if len(leaders) == 1 and leaders[0].is_caught_up() else None

    return wait_until(find, 20, what="a leader")


def test_many_writes_in_flight_replicate_to_every_node(nodes):
    # Thousands of writes in flight make the group committer build its largest batches; an
    # entry past pysyncobj's chunked-transfer threshold would stall the followers here.
    leader = leader_of(nodes)
    outstanding: deque = deque()
    for i in range(20_000):
        if len(outstanding) >= 5000:
            outstanding.popleft().result(30)
        outstanding.append(leader.submit(noop_cmd(f"w{i}")))
    while outstanding:
        assert outstanding.popleft().result(30).startswith("w")

    def converged():
        views = [n.status() for n in nodes.values()]
        return len({(v.revision, v.digest) for v in views}) == 1 and views

    views = wait_until(converged, 20, what="followers applied every batch")
    assert all(v.applied_truncations == 0 for v in views)


def test_a_command_over_the_size_limit_is_refused_with_its_size(nodes):
    leader = leader_of(nodes)
    with pytest.raises(InvalidInput, match="over the 1048576-byte limit"):
        leader.submit(noop_cmd("x" * (MAX_COMMAND_BYTES + 1)))
    assert leader.write(noop_cmd("small")) == "small"


def test_idle_follower_links_stay_fresh_so_vote_requests_are_not_dropped(nodes):
    # pysyncobj drops a link that has received nothing for connectionTimeout when it next sends
    # on it, losing that message: the first vote request after a quiet spell between
    # followers. Keepalives must keep every link's last read well inside the timeout.
    leader_of(nodes)
    timeout = next(iter(nodes.values()))._syncobj.conf.connectionTimeout
    time.sleep(2.5 * timeout)
    now = time.monotonic()
    for node_id, node in nodes.items():
        connections = node._syncobj._SyncObj__transport._connections
        for peer, connection in connections.items():
            idle = now - connection._TcpConnection__lastReadTime
            assert idle < timeout / 2, f"{node_id} -> {peer.id} idle for {idle:.2f}s"
