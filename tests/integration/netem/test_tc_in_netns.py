"""The planned tc rules applied by the real kernel, in a network namespace of their own.

This kernel has no netem qdisc, so the rules use the plain leaf (rules.plan(leaf="pfifo")):
every class, filter and the root are the ones a kind node gets; only the leaf differs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from pipeorch.netem import rules
from pipeorch.netem.agent import TcFailed, run_tc
from pipeorch.netem.rules import Delay, Node

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

NODES = [
    Node("aws-1", "10.0.0.1", "aws"),
    Node("gcp-1", "10.0.1.1", "gcp"),
    Node("azure-1", "10.0.2.1", "azure"),
]
MATRIX = {frozenset(("aws", "gcp")): Delay(50, 5), frozenset(("aws", "azure")): Delay(75, 5)}


def sh(netns: str, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pipeorch-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        sh(name, "ip", "link", "add", "node0", "type", "veth", "peer", "name", "peer0")
        sh(name, "ip", "link", "set", "node0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_the_rules_load_into_the_kernel_and_teardown_removes_them(netns):
    run_tc(rules.plan("node0", NODES[0], NODES, MATRIX, leaf="pfifo"), netns=netns)

    classes = sh(netns, "tc", "class", "show", "dev", "node0")
    assert "class htb 1:1 root" in classes
    assert "class htb 1:10 root leaf 10:" in classes  # azure-1
    assert "class htb 1:11 root leaf 11:" in classes  # gcp-1
    filters = sh(netns, "tc", "filter", "show", "dev", "node0")
    assert "flowid 1:10" in filters
    assert "match 0a000201/ffffffff at 16" in filters  # 10.0.2.1, the IPv4 destination field
    assert "match 0a000101/ffffffff at 16" in filters  # 10.0.1.1

    run_tc(rules.teardown("node0"), netns=netns)
    assert "htb" not in sh(netns, "tc", "qdisc", "show", "dev", "node0")


def test_a_rule_the_kernel_refuses_is_an_error_with_tc_s_words(netns):
    with pytest.raises(TcFailed, match="node9"):
        run_tc(rules.plan("node9", NODES[0], NODES, MATRIX, leaf="pfifo"), netns=netns)
