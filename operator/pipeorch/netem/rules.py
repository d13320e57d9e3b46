"""The tc rules that give a node's egress the configured delay to nodes of other regions.

Pure: from the latency matrix (the ConfigMap the operator derives from the CloudRegions) and
the node list, the ``tc`` commands for one node. Each node delays its own egress by half the
round trip (and half the jitter) to every node of another region; the peer does the same on
its side, so a round trip between regions costs the configured time::

    root  htb 1:  (default class 1:1, no delay: same-region and everything else)
    class 1:N     one per destination node in another region
    leaf  N0:     netem delay RTT/2 JITTER/2 under each class
    filter u32    ip dst <node IP>/32 -> class 1:N

The commands are in ``tc -batch`` form (no leading ``tc``). ``leaf="pfifo"`` swaps netem for a
plain leaf, for kernels without the netem qdisc (the rest is unchanged).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal

#: The ConfigMap key holding the matrix.
CONFIGMAP_KEY = "latency.json"
#: Plenty for any node NIC: HTB only classifies here, it must never shape.
RATE = "100gbit"
_FIRST_CLASS = 0x10
_MAX_PEERS = 0xFFFF - _FIRST_CLASS


@dataclass(frozen=True, order=True)
class Node:
    name: str
    ip: str
    region: str


@dataclass(frozen=True)
class Delay:
    rtt_ms: float
    jitter_ms: float = 0.0


class InvalidLatency(ValueError):
    """The latency ConfigMap does not say what the rules need; the message names the field."""


def latency_data(rtt_ms: dict[str, dict[str, float]], jitter_ms: dict[str, float]) -> str:
    """The ConfigMap's ``latency.json`` from ``{region: {other: rtt}}`` (either side may give a
    pair) and each region's jitter (a pair takes the larger of its two)."""
    links: dict[tuple[str, str], dict[str, Any]] = {}
    for a, row in rtt_ms.items():
        for b, rtt in row.items():
            first, second = sorted((a, b))
            jitter = max(jitter_ms.get(a, 0.0), jitter_ms.get(b, 0.0))
            links[(first, second)] = {"a": first, "b": second, "rttMs": rtt, "jitterMs": jitter}
    return json.dumps({"links": [links[p] for p in sorted(links)]}, indent=2, sort_keys=True)


def parse_latency(text: str) -> dict[frozenset[str], Delay]:
    """The matrix from ``latency.json``; raises InvalidLatency naming the bad field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidLatency(f"{CONFIGMAP_KEY}: not JSON: {e}") from e
    links = data.get("links") if isinstance(data, dict) else None
    if not isinstance(links, list):
        raise InvalidLatency(f"{CONFIGMAP_KEY}: links: must be a list")
    matrix: dict[frozenset[str], Delay] = {}
    for i, link in enumerate(links):
        where = f"{CONFIGMAP_KEY}: links[{i}]"
        try:
            a, b = str(link["a"]), str(link["b"])
            delay = Delay(float(link["rttMs"]), float(link.get("jitterMs", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidLatency(f"{where}: needs a, b and a numeric rttMs ({e})") from e
        if a == b or delay.rtt_ms < 0 or delay.jitter_ms < 0:
            raise InvalidLatency(f"{where}: two distinct regions, rttMs and jitterMs >= 0")
        matrix[frozenset((a, b))] = delay
    return matrix


def plan(
    device: str,
    me: Node,
    nodes: list[Node],
    matrix: dict[frozenset[str], Delay],
    leaf: Literal["netem", "pfifo"] = "netem",
) -> list[str]:
    """The ``tc -batch`` lines that build ``me``'s rules from scratch (after ``teardown``)."""
    peers = sorted(n for n in nodes if n.region != me.region and n.name != me.name)
    delayed = [
        (n, matrix[frozenset((me.region, n.region))]) for n in peers if _known(me, n, matrix)
    ]
    if len(delayed) > _MAX_PEERS:
        raise InvalidLatency(f"{len(delayed)} destination nodes: at most {_MAX_PEERS}")
    lines = [
        f"qdisc add dev {device} root handle 1: htb default 1",
        f"class add dev {device} parent 1: classid 1:1 htb rate {RATE}",
    ]
    for index, (node, delay) in enumerate(delayed):
        minor = format(_FIRST_CLASS + index, "x")
        lines += [
            f"class add dev {device} parent 1: classid 1:{minor} htb rate {RATE}",
            f"qdisc add dev {device} parent 1:{minor} handle {minor}: {_leaf(leaf, delay)}",
            f"filter add dev {device} parent 1: protocol ip prio 1 u32 "
            f"match ip dst {_host(node)}/32 flowid 1:{minor}",
        ]
    return lines


def teardown(device: str) -> list[str]:
    """Removes every rule ``plan`` made (the root qdisc and all below it)."""
    return [f"qdisc del dev {device} root"]


def _known(me: Node, peer: Node, matrix: dict[frozenset[str], Delay]) -> bool:
    return frozenset((me.region, peer.region)) in matrix


def _leaf(kind: str, delay: Delay) -> str:
    if kind == "pfifo":
        return "pfifo"
    half, half_jitter = delay.rtt_ms / 2, delay.jitter_ms / 2
    if half_jitter:
        return f"netem delay {half:g}ms {half_jitter:g}ms"
    return f"netem delay {half:g}ms"


def _host(node: Node) -> str:
    try:
        address = ipaddress.ip_address(node.ip)
    except ValueError as e:
        raise InvalidLatency(f"node {node.name}: {node.ip!r} is not an IP address") from e
    if address.version != 4:
        raise InvalidLatency(f"node {node.name}: only IPv4 node addresses are delayed")
    return str(address)
