"""Clients put the replica that answers as Raft leader first."""

from pipeorch.core.routing import ReplicaRole, find_leader, leader_first

A, B, C = "10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"


def role(node: str, state: str, term: int = 3) -> ReplicaRole:
    return ReplicaRole(node_id=node, state=state, term=term)


def test_the_leader_goes_first_and_the_rest_keep_their_order() -> None:
    roles = {A: role("cp-0", "follower"), B: role("cp-1", "follower"), C: role("cp-2", "leader")}
    assert leader_first([A, B, C], roles) == [C, A, B]


def test_without_an_answering_leader_the_configured_order_stays() -> None:
    roles = {A: role("cp-0", "candidate"), B: role("cp-1", "follower")}  # C did not answer
    assert find_leader(roles) is None
    assert leader_first([A, B, C], roles) == [A, B, C]


def test_a_cut_off_old_leader_loses_to_the_newer_term() -> None:
    roles = {A: role("cp-0", "leader", term=3), B: role("cp-1", "leader", term=4)}
    assert find_leader(roles) == B
    assert leader_first([A, B, C], roles) == [B, A, C]


def test_a_leader_outside_the_configured_list_changes_nothing() -> None:
    assert leader_first([A, B], {C: role("cp-2", "leader")}) == [A, B]
