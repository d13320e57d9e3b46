from __future__ import annotations

import pytest

from pipeorch.core.state import (
    Rejected,
    State,
    apply_batch,
    heartbeat_cmd,
    mark_offline_cmd,
    register_worker_cmd,
)
from pipeorch.core.workers import WorkerStatus, validate_registration
from pipeorch.errors import InvalidInput


def _reg(worker_id: str = "aws-1", region: str = "aws", interval: float = 1.0):
    return validate_registration(worker_id, region, "10.0.0.1:9000", interval)


@pytest.mark.parametrize(
    ("worker_id", "region", "address", "interval", "field"),
    [
        ("", "aws", "", 1.0, "worker_id"),
        ("Aws_1", "aws", "", 1.0, "worker_id"),
        ("a" * 64, "aws", "", 1.0, "worker_id"),
        ("-lead", "aws", "", 1.0, "worker_id"),
        ("w1", "", "", 1.0, "region"),
        ("w1", "AWS", "", 1.0, "region"),
        ("w1", "aws", "x" * 300, 1.0, "address"),
        ("w1", "aws", "", 0.0, "heartbeat_interval_seconds"),
        ("w1", "aws", "", 7200.0, "heartbeat_interval_seconds"),
    ],
)
def test_bad_registration_names_the_field(worker_id, region, address, interval, field):
    with pytest.raises(InvalidInput) as error:
        validate_registration(worker_id, region, address, interval)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}:")


def test_register_then_reregister_keeps_first_registration_time():
    state = State()
    first = state.register_worker(_reg(), now=100.0)
    again = state.register_worker(_reg(), now=200.0)
    assert not first.reregistered
    assert again.reregistered
    assert state.workers["aws-1"].registered_at == 100.0
    assert state.workers["aws-1"].last_heartbeat == 200.0


def test_offline_after_three_missed_intervals_and_back_on_heartbeat():
    state = State()
    state.register_worker(_reg(interval=1.0), now=0.0)
    assert state.expired_workers(now=2.9) == ()
    assert state.expired_workers(now=3.0) == ("aws-1",)
    assert state.mark_offline(("aws-1",), now=3.0) == ["aws-1"]
    assert state.workers["aws-1"].status is WorkerStatus.OFFLINE
    result = state.heartbeat("aws-1", now=4.0)
    assert not isinstance(result, Rejected)
    assert result.came_back
    assert state.workers["aws-1"].status is WorkerStatus.ONLINE


def test_mark_offline_rechecks_so_a_heartbeat_committed_in_between_wins():
    state = State()
    state.register_worker(_reg(interval=1.0), now=0.0)
    proposed = state.expired_workers(now=3.5)
    state.heartbeat("aws-1", now=3.4)  # committed before the leader's proposal
    assert state.mark_offline(proposed, now=3.5) == []
    assert state.workers["aws-1"].status is WorkerStatus.ONLINE


def test_heartbeat_from_unknown_worker_is_rejected_not_raised():
    assert isinstance(State().heartbeat("ghost", now=1.0), Rejected)


def test_same_commands_give_same_digest_on_every_replica():
    commands = [
        register_worker_cmd(_reg("aws-1"), 1.0),
        register_worker_cmd(_reg("gcp-1", "gcp"), 1.5),
        heartbeat_cmd("aws-1", 2.0),
        mark_offline_cmd(("gcp-1",), 9.0),
    ]
    replicas = [State(), State()]
    for replica in replicas:
        apply_batch(replica, commands[:2])
        apply_batch(replica, commands[2:])
    assert replicas[0].digest() == replicas[1].digest()
    restored = State.from_dict(replicas[0].to_dict())
    assert restored.digest() == replicas[0].digest()
    assert restored.workers["gcp-1"].status is WorkerStatus.OFFLINE


def test_unknown_or_failing_command_is_rejected_without_raising():
    state = State()
    results = apply_batch(state, [("worker.teleport/9", ()), ("worker.heartbeat/1", ("x",))])
    assert isinstance(results[0], Rejected)
    assert "unknown command" in results[0].reason
    assert isinstance(results[1], Rejected)
    assert state.revision == 1
