"""RaftNode with the real pysyncobj over real sockets: three nodes in this process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator

import pytest

from pipeorch.core.state import noop_cmd
from pipeorch.errors import InvalidInput
from pipeorch.local.cluster import LOOPBACK_TIMING, free_ports, wait_until
from pipeorch.raft.cipher import SessionCipher
from pipeorch.raft.commit import MAX_COMMAND_BYTES
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings, RaftTiming

from .conftest import raft_node, the_leader, three_members, three_nodes


def assert_no_truncations(group: dict[str, RaftNode]) -> None:
    truncations = {node_id: n.status().applied_truncations for node_id, n in group.items()}
    assert set(truncations.values()) == {0}, f"applied entries truncated: {truncations}"


@pytest.fixture
def nodes(tmp_path) -> Iterator[dict[str, RaftNode]]:
    """Three nodes in this process; on teardown, none may have truncated an applied entry."""
    group = three_nodes(tmp_path)
    try:
        yield group
        assert_no_truncations(group)
    finally:
        for node in group.values():
            node.destroy()


def leader_of(nodes: dict[str, RaftNode]) -> RaftNode:
    return wait_until(lambda: the_leader(nodes), 20, what="a leader")


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


class Forwarder:
    """A plain TCP relay on loopback (the latency gateway's place), counting relayed bytes."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.relayed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        # A side that resets the link (a replica refusing a peer's password) ends the relay.
        with contextlib.suppress(ConnectionError):
            while data := src.recv(65536):
                self.relayed += len(data)
                dst.sendall(data)

    def close(self) -> None:
        self.server.close()


def test_peers_dialled_through_a_gateway_keep_their_identity(tmp_path):
    # pysyncobj only dials from the greater identity address to the lesser; every such link
    # goes through a relay, and the cluster must still elect and replicate normally.
    # Identities sorted as strings, the order pysyncobj compares them in.
    addresses = sorted(f"127.0.0.1:{p}" for p in free_ports(3))
    members = {f"cp-{i}": address for i, address in enumerate(addresses)}
    relays = {node_id: Forwarder(address) for node_id, address in members.items()}
    group = {
        node_id: RaftNode(
            ControlPlaneSettings(
                node_id=node_id,
                members=members,
                dial={peer: relays[peer].address for peer in members if peer != node_id},
                data_dir=tmp_path / node_id,
                raft=RaftTiming(**LOOPBACK_TIMING),
                raft_password="shared-secret",
            )
        )
        for node_id in members
    }
    try:
        leader = leader_of(group)
        assert leader.write(noop_cmd("through-the-gateway")) == "through-the-gateway"
        wait_until(
            lambda: len({(n.status().revision, n.status().digest) for n in group.values()}) == 1,
            10,
            what="replicated through relays",
        )
        assert all(p.connected for n in group.values() for p in n.status().peers)
        # cp-2 dials cp-1 and cp-0, cp-1 dials cp-0: exactly those relays carry the traffic.
        assert relays["cp-0"].relayed > 0
        assert relays["cp-1"].relayed > 0
        assert relays["cp-2"].relayed == 0
        assert_no_truncations(group)
    finally:
        for node in group.values():
            node.destroy()
        for relay in relays.values():
            relay.close()


def test_a_replica_with_the_wrong_password_cannot_join(tmp_path):
    members = three_members()

    def node(node_id: str, password: str) -> RaftNode:
        return raft_node(members, node_id, tmp_path, raft_password=password)

    group = {"cp-0": node("cp-0", "right"), "cp-1": node("cp-1", "right")}
    intruder = node("cp-2", "wrong")
    try:
        leader = leader_of(group)
        leader.write(noop_cmd("x"))
        # Sealed with AES-GCM session keys, not pysyncobj's Fernet (see raft/cipher.py).
        assert isinstance(leader._syncobj.encryptor, SessionCipher)
        time.sleep(1.0)
        status = intruder.status()
        assert status.revision == 0
        assert status.leader_id is None
        assert not any(p.connected for p in status.peers)
        assert_no_truncations({**group, "cp-2": intruder})
    finally:
        for n in [*group.values(), intruder]:
            n.destroy()
