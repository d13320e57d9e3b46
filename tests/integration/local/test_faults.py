"""The local faults on a detached three-region system, through the CLI as a chaos experiment
would use them: a new leader after kill-leader, a partition that moves the leadership while a
pipeline runs and heals into one state again, a re-timed pair of regions, and clear errors.

The tests share one system (starting one takes most of a test's time); each leaves it whole:
every link up, every process running, the replicas agreeing on one state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeorch.console import Client
from pipeorch.local.cluster import wait_until
from pipeorch.local.rtt import median_round_trip
from pipeorch.local.running import RunningSystem
from pipeorch.v1 import pipeorch_pb2 as pb

from ..conftest import assert_replicas_agree
from .conftest import LAYOUT

PIPEORCH = [sys.executable, "-m", "pipeorch.cli"]
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PY = sys.executable


def local(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPEORCH, "local", *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Iterator[Path]:
    """A detached system of the default layout (gateway, MinIO in aws, four workers)."""
    path = tmp_path_factory.mktemp("faults")
    try:
        ok(local(path, "up", "--detach", "--code-path", str(EXAMPLES), timeout=180))
        yield path
    finally:
        local(path, "down")


@pytest.fixture
def system(workdir: Path) -> Iterator[RunningSystem]:
    """The shared system; afterwards whole again, and its replicas in agreement."""
    with RunningSystem.find(workdir) as s:
        yield s
    local(workdir, "heal")
    with RunningSystem.find(workdir) as s:
        for proc in s.state.processes:
            if not proc.running:
                ok(local(workdir, "restart", proc.name))
        for a, b in LAYOUT.pairs():
            if s.state.gateway and _rtt(s, a, b) != LAYOUT.rtt_ms(a, b):
                ok(local(workdir, "latency", a, b, f"{LAYOUT.rtt_ms(a, b):g}"))
    with RunningSystem.find(workdir) as s:
        assert_replicas_agree(s)


def _rtt(system: RunningSystem, a: str, b: str) -> float:
    assert system.state.gateway is not None
    for pair in system.state.gateway.latency:
        if {pair.a, pair.b} == {a, b}:
            return pair.rtt_ms
    raise AssertionError(f"no round trip recorded for {a}-{b}")


def client_env(system: RunningSystem) -> dict[str, str]:
    """The environment a user gets from `source <workdir>/env`."""
    env = dict(os.environ)
    for line in Path(system.state.env_file).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def leader_among(system: RunningSystem, node_ids: list[str]) -> str | None:
    """The leader that all of ``node_ids`` name, if it is one of them and says it leads."""
    views = {n: system.raft(n) for n in node_ids}
    leaders = {v["leader"] for v in views.values()}
    if len(leaders) != 1 or None in leaders:
        return None
    (leader,) = leaders
    return leader if leader in views and views[leader]["state"] == "leader" else None


def test_kill_leader_elects_a_new_leader_and_a_pipeline_still_finishes(system, workdir, tmp_path):
    old = system.wait_for_leader()
    old_term = system.raft(old)["term"]
    said = ok(local(workdir, "kill-leader"))
    assert said.startswith(f"killed the leader {old} ({system.replicas[old].region}, pid ")

    system.reload()
    assert old not in system.live()
    new = system.wait_for_leader()  # among the live replicas
    assert new != old
    assert system.raft(new)["term"] > old_term

    manifest = tmp_path / "energy.yaml"
    text = (EXAMPLES / "energy-pipeline.yaml").read_text()
    manifest.write_text(text.replace("name: energy-report", "name: energy-after-kill"))
    run = subprocess.run(
        [*PIPEORCH, "submit", str(manifest), "--wait"],
        capture_output=True,
        text=True,
        timeout=120,
        env=client_env(system),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pipeline/energy-after-kill Succeeded in " in run.stdout

    said = ok(local(workdir, "restart", old))
    assert f"{old} serves: it reloads its journal" in said


GATE = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\n" + (
    "open(os.environ['PIPEORCH_OUTPUT_OPENED_TXT'], 'w').write('open')"
)
AFTER = (
    "import os; text = open(os.environ['PIPEORCH_INPUT_GATE__OPENED_TXT']).read(); "
    "open(os.environ['PIPEORCH_OUTPUT_AFTER_TXT'], 'w').write(text + ' and after')"
)


def gated_pipeline(name: str, flag: Path) -> str:
    """Two steps; the first runs until ``flag`` exists."""
    return f"""
apiVersion: pipeorch.dev/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  steps:
    - name: gate
      command: [{PY}, -c, {json.dumps(GATE)}, {json.dumps(str(flag))}]
      outputs: [opened.txt]
    - name: after
      dependsOn: [gate]
      inputs: [gate/opened.txt]
      outputs: [after.txt]
      command: [{PY}, -c, "{AFTER}"]
"""


def task_phases(client: Client, name: str) -> dict[str, str]:
    status = client.call(lambda s, t: s.GetPipeline(pb.GetPipelineRequest(name=name), timeout=t))
    return {t.step: t.phase for t in status.tasks} | {"": status.phase}


def test_partition_of_the_leaders_region_moves_the_leadership_and_heal_rejoins_it(
    system, workdir, tmp_path
):
    leader = system.wait_for_leader()
    for _ in range(3):
        if system.replicas[leader].region != LAYOUT.store_region:
            break
        # Cut there, the store would be cut off from every other region's workers too, and the
        # pipeline could not finish before the heal: lead from elsewhere first.
        ok(local(workdir, "kill-leader"))
        ok(local(workdir, "restart", leader))
        system.reload()
        system.wait_converged()
        leader = system.wait_for_leader()
    assert system.replicas[leader].region != LAYOUT.store_region
    region = system.replicas[leader].region
    others = [n for n in system.replicas if n != leader]

    flag = tmp_path / "open-the-gate"
    client = Client([system.replicas[n].addresses["grpc"] for n in others], timeout=10)
    try:
        manifest = gated_pipeline("across-a-cut", flag)
        client.call(
            lambda s, t: s.SubmitPipeline(pb.SubmitPipelineRequest(manifest=manifest), timeout=t)
        )
        wait_until(
            lambda: task_phases(client, "across-a-cut")["gate"] == "Running",
            30,
            what="gate running",
        )
        said = ok(local(workdir, "partition", region))
        assert said.startswith(f"cut {region} off from ")

        moved_to = wait_until(
            lambda: leader_among(system, others), 20, what="a leader outside the cut region"
        )
        assert system.replicas[moved_to].region != region
        flag.touch()
        wait_until(
            lambda: task_phases(client, "across-a-cut")[""] == "Succeeded",
            60,
            what="the pipeline finished",
        )
    finally:
        client.close()

    said = ok(local(workdir, "heal"))
    assert said.startswith(f"reconnected {region}: every link is up")
    system.wait_for_leader(timeout=20)  # all three agree again (the cut one may force a vote)
    views = system.wait_converged(timeout=20)
    assert len({v["digest"] for v in views.values()}) == 1, views
    assert len({v["commit_index"] for v in views.values()}) == 1, views


def median_rtt_ms(address: str) -> float:
    return median_round_trip(f"http://{address}/readyz", samples=7)


def replica_link(system: RunningSystem, from_region: str, to_region: str) -> str:
    """The proxy a process in ``from_region`` dials for the HTTP of ``to_region``'s replica."""
    node_id = next(n for n, r in system.replicas.items() if r.region == to_region)
    assert system.state.gateway is not None
    links = system.state.gateway.links
    return next(
        link.listen
        for link in links
        if link.from_region == from_region and link.upstream_name == f"{node_id}-http"
    )


def test_latency_sets_the_measured_round_trip_of_a_pair(system, workdir):
    said = ok(local(workdir, "latency", "aws", "gcp", "200"))
    assert "round trip aws <-> gcp: 200 ms (jitter 5 ms), was 50 ms" in said
    assert "measured through the gateway: aws -> gcp " in said
    for a, b in (("aws", "gcp"), ("gcp", "aws")):
        assert 0.8 * 200 <= median_rtt_ms(replica_link(system, a, b)) <= 1.2 * 200, (a, b)
    # Only that pair.
    assert median_rtt_ms(replica_link(system, "aws", "azure")) <= 1.2 * 75


def test_bad_fault_input_is_refused_naming_the_problem(system, workdir):
    cases = {
        ("kill-worker", "mars"): (2, "REGION: unknown region 'mars': this system has aws, gcp"),
        ("partition", "mars"): (2, "unknown region 'mars'"),
        ("latency", "aws", "aws", "10"): (2, "a region has no round trip to itself"),
        ("latency", "aws", "gcp", "0"): (2, "MS: a round trip must be more than 0 ms"),
        ("latency", "aws", "gcp", "20", "--jitter", "30"): (2, "--jitter: 30 ms: must be"),
        ("restart", "cp-9"): (2, "no process 'cp-9' in this system: one of cp-0, cp-1"),
        ("restart", "toxiproxy"): (1, "the gateway cannot restart alone"),
    }
    for args, (code, message) in cases.items():
        result = local(workdir, *args)
        assert (result.returncode, message in result.stderr) == (code, True), (args, result)

    said = ok(local(workdir, "kill-worker", "gcp"))
    assert said.startswith("killed worker gcp-w1 (gcp, pid ")
    result = local(workdir, "kill-worker", "gcp")
    assert result.returncode == 1
    assert "no worker left in gcp: gcp-w1 already killed" in result.stderr


def test_partition_and_latency_need_the_gateway(tmp_path):
    try:
        ok(local(tmp_path, "up", "--detach", "--no-gateway", "--no-store", timeout=120))
        for args in (("partition", "aws"), ("latency", "aws", "gcp", "100")):
            result = local(tmp_path, *args)
            assert result.returncode == 1, result
            assert "has no latency gateway (it was started with --no-gateway)" in result.stderr
        # The process faults work without it.
        assert ok(local(tmp_path, "kill-worker", "azure")).startswith("killed worker azure-w1")
    finally:
        ok(local(tmp_path, "down"))
