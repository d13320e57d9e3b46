"""The arithmetic of the latency gateway and of the Raft timing that goes with it."""

from __future__ import annotations

import pytest

from pipeorch.local.cluster import wan_timing
from pipeorch.local.gateway import one_way_toxics
from pipeorch.local.rtt import format_matrix
from pipeorch.settings import RaftTiming


@pytest.mark.parametrize(
    ("rtt", "jitter", "up", "down"),
    [
        (50, 5, (25, 3), (25, 2)),
        (125, 5, (63, 3), (62, 2)),
        (75.4, 0, (38, 0), (37, 0)),
        (0, 0, (0, 0), (0, 0)),
    ],
)
def test_both_directions_add_up_to_the_round_trip(rtt, jitter, up, down):
    toxics = one_way_toxics(rtt, jitter)
    assert (toxics["upstream"]["latency"], toxics["upstream"]["jitter"]) == up
    assert (toxics["downstream"]["latency"], toxics["downstream"]["jitter"]) == down
    assert up[0] + down[0] == round(rtt)
    assert up[1] + down[1] == round(jitter)


def test_wan_timing_is_the_default_up_to_125_ms_and_stretches_beyond():
    defaults = RaftTiming()
    at_default = wan_timing(125)
    assert at_default["min_timeout"] == defaults.min_timeout
    assert at_default["max_timeout"] == defaults.max_timeout
    assert at_default["append_entries_period"] == defaults.append_entries_period
    assert wan_timing(40) == at_default
    slow = wan_timing(250)
    assert slow["min_timeout"] == 2 * defaults.min_timeout
    assert slow["append_entries_period"] == defaults.append_entries_period
    RaftTiming(**slow)  # still satisfies pysyncobj's rules


def test_matrix_shows_measured_beside_configured():
    measured = {("a", "b"): 51.26, ("b", "a"): 49.9}
    table = format_matrix(["a", "b"], measured, lambda x, y: 50).splitlines()
    assert table[1].split() == ["a", "direct", "51.3", "(50)"]
    assert table[2].split() == ["b", "49.9", "(50)", "direct"]
