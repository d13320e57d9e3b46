"""What the replicas of a local system say about Raft, over their HTTP endpoints.

Shared by ``LocalCluster`` (the processes it started itself) and ``RunningSystem`` (a system
found through its state file): both know each replica's HTTP address and which replicas run.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from pipeorch.local.processes import wait_until


class ReplicaViews:
    """Raft views of a set of replicas; subclasses say where each replica serves HTTP and
    which ones run."""

    _http: httpx.Client

    def replica_http(self, node_id: str) -> str:
        raise NotImplementedError

    def live(self) -> list[str]:
        raise NotImplementedError

    def get(self, node_id: str, path: str) -> Any:
        response = self._http.get(f"http://{self.replica_http(node_id)}{path}")
        response.raise_for_status()
        return response.json()

    def raft(self, node_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(node_id, "/raft")
        return result

    def views(self) -> dict[str, dict[str, Any]]:
        """The /raft view of every live replica that answers."""
        out = {}
        for node_id in self.live():
            with contextlib.suppress(httpx.HTTPError):
                out[node_id] = self.raft(node_id)
        return out

    def leader(self) -> str | None:
        """The leader that every live replica names (all of them answering), if it leads."""
        views = self.views()
        if len(views) != len(self.live()):
            return None  # a replica still starting: callers may talk to it next
        leaders = {v["leader"] for v in views.values()}
        if len(leaders) != 1 or None in leaders:
            return None
        (leader,) = leaders
        if leader not in views or views[leader]["state"] != "leader":
            return None
        return str(leader)

    def claimed_leader(self) -> str | None:
        """The replica that says it leads, in the highest term if two do (a cut-off leader
        takes a moment to step down); None during an election."""
        leading = [(v["term"], n) for n, v in self.views().items() if v["state"] == "leader"]
        return max(leading)[1] if leading else None

    def wait_for_leader(self, timeout: float = 20.0) -> str:
        return wait_until(self.leader, timeout, what="a leader all live replicas agree on")

    def followers(self) -> list[str]:
        leader = self.wait_for_leader()
        return [node_id for node_id in self.live() if node_id != leader]

    def wait_converged(self, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """Wait until every live replica applied the same revision; return their views."""

        def converged() -> dict[str, dict[str, Any]] | None:
            views = self.views()
            if len(views) != len(self.live()):
                return None
            if len({(v["revision"], v["applied_index"]) for v in views.values()}) != 1:
                return None
            return views

        return wait_until(converged, timeout, what="replicas converged on one revision")
