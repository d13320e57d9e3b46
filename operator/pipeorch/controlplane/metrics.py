"""Prometheus metrics of one control-plane replica.

Event counts and latencies are recorded as they happen; everything that is a property of the
replicated state or of the Raft node (term, indexes, workers by status) is read at scrape time by
a collector, so the numbers can never drift from the state they describe.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeorch.core.runs import TaskPhase
from pipeorch.core.state import State
from pipeorch.core.workers import WorkerStatus
from pipeorch.raft.node import RaftNode

# Commit latency spans loopback (sub-millisecond) to a 125 ms WAN and a slow election.
_COMMIT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Metrics:
    """The metric objects of one process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commit_latency = Histogram(
            "raft_commit_latency_seconds",
            "Time from proposing a batch of commands to its being applied on this replica.",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.commit_batch_size = Histogram(
            "raft_commit_batch_commands",
            "Commands per committed batch (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.workers_marked_offline = Counter(
            "workers_marked_offline_total",
            "Workers this replica, as leader, marked offline after missed heartbeats.",
            ["region"],
            registry=self.registry,
        )
        self.workers_back_online = Counter(
            "workers_back_online_total",
            "Offline workers that came back with a heartbeat through this replica.",
            ["region"],
            registry=self.registry,
        )

        self.task_reports = Counter(
            "task_reports",
            "Completions and failures reported through this replica, by whether they were "
            "applied or ignored as stale or duplicate.",
            ["kind", "result"],
            registry=self.registry,
        )
        self._reports: dict[tuple[str, bool], Counter] = {}

    def count_report(self, kind: str, accepted: bool) -> None:
        key = (kind, accepted)
        counter = self._reports.get(key)
        if counter is None:  # labels() checks and locks: a few microseconds on every report
            counter = self._reports[key] = self.task_reports.labels(
                kind, "applied" if accepted else "ignored"
            )
        counter.inc()

    def observe_commit(self, seconds: float, commands: int) -> None:
        self.commit_latency.observe(seconds)
        self.commit_batch_size.observe(commands)

    def watch(self, node: RaftNode) -> None:
        self.registry.register(_RaftCollector(node))


class _RaftCollector(Collector):
    def __init__(self, node: RaftNode) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self._node.status()
        state = GaugeMetricFamily(
            "raft_state", "1 for this replica's current Raft state.", labels=["state"]
        )
        for name in ("follower", "candidate", "leader"):
            state.add_metric([name], 1.0 if status.state == name else 0.0)
        yield state
        yield _gauge("raft_term", "Current Raft term.", status.term)
        yield _gauge("raft_commit_index", "Highest log index known committed.", status.commit_index)
        yield _gauge("raft_applied_index", "Highest log index applied here.", status.applied_index)
        yield _gauge("raft_has_quorum", "1 when a majority is reachable.", int(status.has_quorum))
        yield _counter("raft_elections", "Elections this replica started.", self._node.elections)
        yield _counter(
            "raft_stale_append_entries",
            "Stale AppendEntries that would have truncated the log and were neutralised.",
            status.stale_appends_neutralised,
        )
        yield _counter(
            "raft_applied_truncations",
            "Already-applied log entries that were truncated. Must stay zero.",
            status.applied_truncations,
        )
        peers = GaugeMetricFamily(
            "raft_peer_connected", "1 when the peer's connection is up.", labels=["peer"]
        )
        for peer in status.peers:
            peers.add_metric([peer.node_id], int(peer.connected))
        yield peers
        yield self._workers()
        yield from self._node.read(_task_families)

    def _workers(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "workers", "Registered workers by region and status.", labels=["region", "status"]
        )
        counts = self._node.read(_count_workers)
        for (region, status), count in sorted(counts.items()):
            family.add_metric([region, status], count)
        return family


def _task_families(state: State) -> list[GaugeMetricFamily | CounterMetricFamily]:
    phases = GaugeMetricFamily("tasks", "Tasks by phase.", labels=["phase"])
    counts: dict[str, int] = dict.fromkeys((p.value for p in TaskPhase), 0)
    for task in state.runs.tasks.values():
        counts[task.phase.value] += 1
    for phase, count in counts.items():
        phases.add_metric([phase], count)
    failures = CounterMetricFamily(
        "task_failures",
        "Failed attempts by class: application failures spend the retry budget, "
        "infrastructure failures (worker lost, lease expired, storage down) do not.",
        labels=["class"],
    )
    for failure_class, count in sorted(state.runs.failures.items()):
        failures.add_metric([failure_class], count)
    stale = CounterMetricFamily(
        "task_stale_reports",
        "Completions or failures ignored because they named a stale or finished attempt.",
        value=state.runs.stale_reports,
    )
    return [phases, failures, stale]


def _count_workers(state: State) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for worker in state.workers.values():
        for status in WorkerStatus:  # report zeros too, so a series does not vanish
            counts.setdefault((worker.region, status.value), 0)
        counts[(worker.region, worker.status.value)] += 1
    return counts


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
