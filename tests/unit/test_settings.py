from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeorch.settings import ControlPlaneSettings, RaftTiming, WorkerSettings

MEMBERS = {"cp-0": "127.0.0.1:7000", "cp-1": "127.0.0.1:7001", "cp-2": "127.0.0.1:7002"}


def test_defaults_fit_a_125ms_round_trip_and_pass_pysyncobj_rules():
    timing = RaftTiming()
    # Several worst round trips fit in the shortest election timeout.
    assert timing.min_timeout >= 8 * 0.125
    assert timing.min_timeout > 3 * timing.append_entries_period
    assert timing.connection_timeout >= timing.max_timeout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_timeout": 0.2, "append_entries_period": 0.1}, "3 x append_entries_period"),
        ({"min_timeout": 1.0, "max_timeout": 1.0}, "max_timeout"),
        ({"max_timeout": 3.0, "connection_timeout": 2.0}, "connection_timeout"),
        ({"leader_fallback_timeout": 0.05}, "leader_fallback_timeout"),
        ({"max_inflight_batches": 0}, "max_inflight_batches"),
        ({"tick_period": 0.2}, "tick_period"),
    ],
)
def test_timing_rules_are_enforced_with_a_message(overrides, message):
    with pytest.raises(ValidationError, match=message):
        RaftTiming(**overrides)


def test_node_must_be_a_member_and_dial_names_members():
    with pytest.raises(ValidationError, match="not one of members"):
        ControlPlaneSettings(node_id="cp-9", members=MEMBERS)
    with pytest.raises(ValidationError, match="unknown members"):
        ControlPlaneSettings(node_id="cp-0", members=MEMBERS, dial={"cp-7": "127.0.0.1:1"})
    with pytest.raises(ValidationError, match="HOST:PORT"):
        ControlPlaneSettings(node_id="cp-0", members={**MEMBERS, "cp-0": "nowhere"})


def test_the_worker_defaults_are_valid_settings():
    """Its HTTP default is port 0 (any free port): a default must pass its own validator."""
    settings = WorkerSettings(control_plane=["127.0.0.1:7100"])
    assert settings.http_listen == "127.0.0.1:0"


def test_password_file_wins_and_environment_fills_in(tmp_path, monkeypatch):
    secret = tmp_path / "raft-password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("PIPEORCH_RAFT_PASSWORD", "from-env")
    settings = ControlPlaneSettings(node_id="cp-0", members=MEMBERS)
    assert settings.password() == "from-env"
    settings = ControlPlaneSettings(node_id="cp-0", members=MEMBERS, raft_password_file=secret)
    assert settings.password() == "s3cret"
    assert "from-env" not in repr(settings)
