"""tc rules from the latency matrix: pure, checked line by line."""

from __future__ import annotations

import json
import re

import pytest

from pipeorch.netem import rules
from pipeorch.netem.rules import Delay, InvalidLatency, Node

MATRIX = rules.parse_latency(
    rules.latency_data(
        {"aws": {"gcp": 50, "azure": 75}, "gcp": {"azure": 125}},
        {"aws": 5.0, "gcp": 5.0, "azure": 10.0},
    )
)
NODES = [
    Node("aws-1", "10.0.0.1", "aws"),
    Node("aws-2", "10.0.0.2", "aws"),
    Node("gcp-1", "10.0.1.1", "gcp"),
    Node("azure-1", "10.0.2.1", "azure"),
]


def test_the_configmap_holds_each_pair_once_with_the_larger_jitter():
    data = json.loads(
        rules.latency_data({"gcp": {"aws": 50}, "aws": {"gcp": 50}}, {"aws": 5, "gcp": 8})
    )
    assert data == {"links": [{"a": "aws", "b": "gcp", "rttMs": 50, "jitterMs": 8}]}
    assert MATRIX[frozenset(("gcp", "azure"))] == Delay(125, 10)


def test_a_node_delays_half_the_round_trip_to_each_node_of_another_region():
    lines = rules.plan("eth0", NODES[0], NODES, MATRIX)
    assert lines == [
        "qdisc add dev eth0 root handle 1: htb default 1",
        "class add dev eth0 parent 1: classid 1:1 htb rate 100gbit",
        # azure-1 sorts first; same-region aws-2 is not delayed at all
        "class add dev eth0 parent 1: classid 1:10 htb rate 100gbit",
        "qdisc add dev eth0 parent 1:10 handle 10: netem delay 37.5ms 5ms",
        "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.2.1/32 flowid 1:10",
        "class add dev eth0 parent 1: classid 1:11 htb rate 100gbit",
        "qdisc add dev eth0 parent 1:11 handle 11: netem delay 25ms 2.5ms",
        "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.1.1/32 flowid 1:11",
    ]


def test_the_plain_leaf_keeps_every_class_and_filter():
    netem = rules.plan("eth0", NODES[2], NODES, MATRIX)
    plain = rules.plan("eth0", NODES[2], NODES, MATRIX, leaf="pfifo")
    assert [line for line in netem if "netem" not in line] == [
        line for line in plain if "pfifo" not in line
    ]
    assert sum("pfifo" in line for line in plain) == 3  # aws-1, aws-2, azure-1


def test_a_pair_missing_from_the_matrix_is_not_delayed():
    matrix = {frozenset(("aws", "gcp")): Delay(50)}
    lines = rules.plan("eth0", NODES[0], NODES, matrix)
    assert not any("10.0.2.1" in line for line in lines)
    assert "netem delay 25ms" in lines[3]


def test_teardown_removes_the_root():
    assert rules.teardown("eth0") == ["qdisc del dev eth0 root"]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{", "not JSON"),
        ('{"links": {}}', "links: must be a list"),
        ('{"links": [{"a": "aws"}]}', "links[0]: needs a, b"),
        ('{"links": [{"a": "aws", "b": "aws", "rttMs": 5}]}', "links[0]: two distinct"),
        ('{"links": [{"a": "aws", "b": "gcp", "rttMs": -1}]}', "links[0]: two distinct"),
    ],
)
def test_a_bad_configmap_names_the_field(text, names):
    with pytest.raises(InvalidLatency, match=re.escape(names)):
        rules.parse_latency(text)


def test_a_node_without_an_ipv4_address_is_refused():
    nodes = [NODES[0], Node("gcp-x", "fd00::1", "gcp")]
    with pytest.raises(InvalidLatency, match="gcp-x: only IPv4"):
        rules.plan("eth0", NODES[0], nodes, MATRIX)
