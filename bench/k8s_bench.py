"""The operator against a real API server (kwokctl: etcd, kube-apiserver, controller manager,
scheduler), with 3 local replicas, 3 workers and MinIO.

(A) apply -> every Task object exists (a 10-step fan-out, created through the API);
(B) status lag: a task's change in the replicated state (its startedAt/finishedAt, written by
    the replica) -> the change visible to a watch on Task objects;
(C) operator failover: leader SIGKILL -> the first Task status patched by the new leader's
    operator, and -> the Tasks of a Pipeline applied at the moment of the kill exist.
Every replica's count of truncated applied entries is read at the end; it must be zero.
Results: bench/results/k8s.json and a table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from bench.raft_bench import applied_truncations, pct, truncation_status, write_results
from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.local.k8s import KwokCluster
from pipeorch.local.up import workers_online

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION = "pipeorch.dev", "v1alpha1"
STEPS_MODULE = "def noop(ctx):\n    pass\n"


def pipeline(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }


def fan_out(name: str, width: int) -> dict[str, Any]:
    return pipeline(name, [{"name": f"s{i}", "run": "bench_steps:noop"} for i in range(width)])


def chain(name: str, length: int, seconds: float) -> dict[str, Any]:
    steps = [
        {
            "name": f"s{i}",
            "command": ["sleep", str(seconds)],
            **({"dependsOn": [f"s{i - 1}"]} if i else {}),
        }
        for i in range(length)
    ]
    return pipeline(name, steps)


class TaskWatch:
    """When each (Task, phase) first became visible through a watch, by local wall clock."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.events: list[tuple[float, str, str]] = []
        self._w = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)
        self._thread.start()

    def _run(self, api: Any, namespace: str) -> None:
        stream = self._w.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, namespace, "tasks"
        )
        try:
            for event in stream:
                self._record(event)
        except Exception:  # the stream is cut when stop() ends the watch
            if not self._stopped:
                raise

    def _record(self, event: dict[str, Any]) -> None:
        now = time.time()
        obj = event["object"]
        phase = obj.get("status", {}).get("phase")
        if phase:
            self.seen.setdefault((obj["metadata"]["name"], phase), now)
            self.events.append((now, obj["metadata"]["name"], phase))

    def stop(self) -> None:
        self._stopped = True
        self._w.stop()


class Bench:
    def __init__(self, k8s: KwokCluster, cluster: LocalCluster, namespace: str) -> None:
        self.k8s, self.cluster, self.ns = k8s, cluster, namespace
        self.api = client.CustomObjectsApi(config.new_client_from_config(str(k8s.kubeconfig)))
        self.watch = TaskWatch(self.api, namespace)

    def create(self, body: dict[str, Any]) -> None:
        self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "pipelines", body)

    def tasks(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.ns, "tasks", label_selector=f"{GROUP}/pipeline={name}"
        )["items"]
        return items

    def phase(self, name: str) -> str | None:
        body = self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "pipelines", name)
        return body.get("status", {}).get("phase")

    def wait_succeeded(self, name: str, timeout: float = 120) -> None:
        wait_until(lambda: self.phase(name) == "Succeeded", timeout, interval=0.05, what=name)

    def state_tasks(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.cluster.get(
            self.cluster.wait_for_leader(), f"/pipelines/{name}/tasks"
        )
        return result

    # ---- (A) and (B) ---------------------------------------------------------------------------

    def tasks_exist(self, runs: int, width: int) -> tuple[list[float], list[float], list[float]]:
        created, running_lag, done_lag = [], [], []
        for i in range(runs):
            name = f"fan-{i}"
            start = time.perf_counter()
            self.create(fan_out(name, width))
            wait_until(lambda n=name: len(self.tasks(n)) == width, 30, interval=0.005, what=name)
            created.append(time.perf_counter() - start)
            self.wait_succeeded(name)
            for task in self.state_tasks(name):
                obj = f"{name}-{task['step']}"
                for phase, at, out in (
                    ("Running", task["started_at"], running_lag),
                    ("Succeeded", task["finished_at"], done_lag),
                ):
                    seen = self.watch.seen.get((obj, phase))
                    if seen is not None and at:  # a short step may skip Running in the mirror
                        out.append(seen - at)
        return created, running_lag, done_lag

    # ---- (C) -----------------------------------------------------------------------------------

    def failover(self, k: int) -> tuple[float, float]:
        name = f"chain-{k}"
        self.create(chain(name, 40, 0.1))
        wait_until(
            lambda: (f"{name}-s1", "Succeeded") in self.watch.seen, 60, interval=0.01, what=name
        )
        leader = self.cluster.wait_for_leader()
        killed = time.time()
        self.cluster.kill_replica(leader)
        probe = f"probe-{k}"
        self.create(pipeline(probe, [{"name": "only", "run": "bench_steps:noop"}]))
        wait_until(lambda: self.tasks(probe), 60, interval=0.01, what=f"{probe} Tasks")
        probe_seconds = time.time() - killed
        self.wait_succeeded(name)
        # The first change the replicated state made after the kill (so only the new leader's
        # operator can have mirrored it) that a watch saw: kill -> first status patched.
        after = [
            seen
            for task in self.state_tasks(name)
            for phase, at in (("Running", task["started_at"]), ("Succeeded", task["finished_at"]))
            if at > killed and (seen := self.watch.seen.get((f"{name}-{task['step']}", phase)))
        ]
        first = min(after)
        self.cluster.replicas[leader].start()
        self.cluster.wait_for_leader()
        self.cluster.wait_converged()
        return first - killed, probe_seconds


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(pct(samples, 0.5) * 1000, 1),
        "p99_ms": round(pct(samples, 0.99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="fan-out pipelines for (A), (B)")
    parser.add_argument("--width", type=int, default=10, help="steps per fan-out")
    parser.add_argument("--kills", type=int, default=3, help="leader kills for (C)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="k8s-bench-"))
    (work / "steps").mkdir()
    (work / "steps" / "bench_steps.py").write_text(STEPS_MODULE)
    k8s = KwokCluster(work / "k8s", name=f"pipeorch-bench-{os.getpid()}")
    k8s.start()
    cluster: LocalCluster | None = None
    bench: Bench | None = None
    try:
        k8s.install_crds(ROOT / "crds")
        namespace = "bench"
        k8s.kubectl("create", "namespace", namespace)
        cluster = LocalCluster(
            work / "cp",
            regions=["aws", "gcp", "azure"],
            store_region="aws",
            code_path=[work / "steps"],
            kubeconfig=k8s.kubeconfig,
            watch_namespace=namespace,
        )
        cluster.start()
        for region in ("aws", "gcp", "azure"):
            cluster.add_worker(region, worker_id=f"{region}-w1", heartbeat=0.3, slots=4)
        wait_until(lambda: workers_online(cluster, 3), 30, what="workers")  # type: ignore[arg-type]
        bench = Bench(k8s, cluster, namespace)
        # Warm-up: the watch is listening and the operator has handled a first pipeline.
        bench.create(fan_out("warm-up", 2))
        bench.wait_succeeded("warm-up")
        wait_until(lambda: ("warm-up-s0", "Succeeded") in bench.watch.seen, 30, what="watch")
        created, running, done = bench.tasks_exist(args.runs, args.width)
        failovers = [bench.failover(k) for k in range(args.kills)]
        truncations = applied_truncations(cluster)
    finally:
        if bench is not None:
            bench.watch.stop()
        if cluster is not None:
            cluster.stop()
        k8s.stop()
    result = {
        "setup": "kwokctl binary cluster + 3 local replicas (loopback Raft timing) + 3 workers",
        # The machine is shared: the figures move with what else runs on it.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "apply_to_all_tasks_exist": {"width": args.width, **summary(created)},
        "status_lag_running": summary(running),
        "status_lag_succeeded": summary(done),
        "failover_to_first_status_patch": summary([f for f, _ in failovers]),
        "failover_to_tasks_of_new_pipeline": summary([p for _, p in failovers]),
        "applied_truncations": truncations,
    }
    write_results("k8s.json", result)
    for what, figures in result.items():
        print(f"{what:38} {figures}")
    return truncation_status(truncations)


if __name__ == "__main__":
    raise SystemExit(main())
