"""The netem DaemonSet's process: keep this node's tc rules equal to the latency ConfigMap.

Every ``period`` seconds (and at start) it reads the ConfigMap and the node list, plans the
rules (rules.py) and, when they differ from what it applied last, rebuilds them; on exit it
removes them, so a node is never left delayed by a DaemonSet that is gone.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeorch.errors import PipeorchError, Unavailable
from pipeorch.netem import rules

log = logging.getLogger(__name__)

REGION_LABELS = ("pipeorch.dev/region", "topology.kubernetes.io/region")


class TcFailed(PipeorchError):
    """tc refused a rule; the message has tc's own words."""


def run_tc(lines: Sequence[str], check: bool = True, netns: str | None = None) -> None:
    """Apply ``tc -batch`` lines (in network namespace ``netns`` when given)."""
    argv = ["tc", "-batch", "-"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if check and done.returncode != 0:
        raise TcFailed(f"tc -batch failed ({done.returncode}): {done.stderr.strip()}")


def nodes_from(items: list[Any]) -> list[rules.Node]:
    """Nodes with a region label and an InternalIP (others are left alone)."""
    nodes = []
    for item in items:
        labels = item.metadata.labels or {}
        region = next((labels[k] for k in REGION_LABELS if k in labels), None)
        addresses = item.status.addresses if item.status else None
        ip = next((a.address for a in addresses or [] if a.type == "InternalIP"), None)
        if region and ip:
            nodes.append(rules.Node(item.metadata.name, ip, region))
    return nodes


@dataclass
class NetemAgent:
    api: Any  # kubernetes.client.CoreV1Api
    node_name: str
    namespace: str
    configmap: str
    device: str
    leaf: Literal["netem", "pfifo"] = "netem"
    apply: Callable[..., None] = run_tc

    def __post_init__(self) -> None:
        self.applied: list[str] | None = None

    def desired(self) -> list[str]:
        nodes = nodes_from(self._read(lambda: self.api.list_node().items, "the node list"))
        me = next((n for n in nodes if n.name == self.node_name), None)
        if me is None:
            raise Unavailable(f"node {self.node_name!r} has no region label or InternalIP yet")
        cm = self._read(
            lambda: self.api.read_namespaced_config_map(self.configmap, self.namespace),
            f"ConfigMap {self.namespace}/{self.configmap}",
        )
        text = (cm.data or {}).get(rules.CONFIGMAP_KEY)
        if text is None:
            raise rules.InvalidLatency(f"ConfigMap {self.configmap} has no {rules.CONFIGMAP_KEY}")
        return rules.plan(self.device, me, nodes, rules.parse_latency(text), self.leaf)

    def reconcile(self) -> bool:
        """Rebuild the rules if they should change; True when it did."""
        wanted = self.desired()
        if wanted == self.applied:
            return False
        self.apply(rules.teardown(self.device), check=False)  # nothing there is fine
        self.apply(wanted)
        self.applied = wanted
        log.info("netem: %d rule lines applied on %s", len(wanted), self.device)
        return True

    def clear(self) -> None:
        self.apply(rules.teardown(self.device), check=False)
        self.applied = None

    def run(self, stop: threading.Event, period: float) -> None:
        try:
            while not stop.is_set():
                try:
                    self.reconcile()
                except (Unavailable, rules.InvalidLatency, TcFailed) as e:
                    log.warning("netem: %s", e)
                stop.wait(period)
        finally:
            self.clear()
            log.info("netem: rules removed from %s", self.device)

    @staticmethod
    def _read(call: Callable[[], Any], what: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as e:
            raise Unavailable(f"cannot read {what}: {e.status} {e.reason}") from e
