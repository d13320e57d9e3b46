"""The README's commands, run as a user would run them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import psutil

from pipeorch.local import statefile
from pipeorch.local.cluster import LocalCluster, wait_until
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

PIPEORCH = [sys.executable, "-m", "pipeorch.cli"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_local_up_runs_three_regions_and_the_energy_example_then_leaves_nothing(tmp_path):
    result = subprocess.run(
        [
            *PIPEORCH,
            "local",
            "up",
            "--workdir",
            str(tmp_path),
            "--for",
            "1",
            "--run",
            str(EXAMPLES / "energy-pipeline.yaml"),
            "--code-path",
            str(EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = [line.split() for line in out.splitlines()]
    replicas = {r[0]: (r[1], r[2]) for r in rows if r and r[0].startswith("cp-")}
    assert sorted(region for region, _ in replicas.values()) == ["aws", "azure", "gcp"]
    assert sorted(role for _, role in replicas.values()) == ["follower", "follower", "leader"]
    workers = {r[0]: (r[1], r[2]) for r in rows if len(r) == 3 and r[0].endswith(("-w1", "-w2"))}
    assert workers == {
        "aws-w1": ("aws", "online"),
        "aws-w2": ("aws", "online"),
        "gcp-w1": ("gcp", "online"),
        "azure-w1": ("azure", "online"),
    }
    assert "latency gateway (toxiproxy)" in out.splitlines()[0]
    # The measured round trips beside the configured ones: "aws direct 52.8 (50) 76.4 (75)".
    matrix = {r[0]: r[1:] for r in rows if len(r) == 6 and r[0] in ("aws", "gcp", "azure")}
    configured = {"aws": [50, 75], "gcp": [50, 125], "azure": [75, 125]}
    for region, cells in matrix.items():
        links = [c for c in cells if c != "direct"]
        assert [float(c.strip("()")) for c in links[1::2]] == configured[region]
        for measured, rtt in zip(links[0::2], configured[region], strict=True):
            assert 0.8 * rtt <= float(measured) <= 1.2 * rtt, out
    assert sorted(matrix) == ["aws", "azure", "gcp"]
    assert "/raft" in out
    assert "/cluster" in out
    assert "MinIO console http://127.0.0.1:" in out
    assert "pipeline/energy-report Succeeded in " in out
    assert "--- report/report.md ---" in out
    assert "Largest consumer: **plant-c**." in out
    env = (tmp_path / "env").read_text()
    assert "PIPEORCH_STORE_SECRET_KEY=" in env
    assert (tmp_path / "env").stat().st_mode & 0o077 == 0
    assert (tmp_path / "toxiproxy.log").stat().st_size > 0  # the gateway ran in this workdir
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_cluster_command_prints_raft_view_and_workers(cluster: LocalCluster):
    with grpc.insecure_channel(cluster.replicas["cp-0"].grpc) as channel:
        pb_grpc.WorkerServiceStub(channel).Register(
            pb.RegisterRequest(worker_id="aws-7", region="aws", heartbeat_interval_seconds=30),
            timeout=5,
        )
    leader = cluster.wait_for_leader()
    result = subprocess.run(
        [*PIPEORCH, "cluster", "--control-plane", cluster.replicas["cp-1"].grpc],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("replica cp-1 (")
    assert f"leader {leader}" in lines[0]
    assert sum("connected" in line for line in lines) == 2
    assert any(line.split()[:3] == ["aws-7", "aws", "online"] for line in lines)


def test_bad_settings_exit_2_naming_the_problem(tmp_path):
    result = subprocess.run(
        [*PIPEORCH, "controlplane", "--node-id", "cp-9", "--member", "cp-0=127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "not one of members" in result.stderr
    result = subprocess.run(
        [*PIPEORCH, "cluster", "--control-plane", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_local_up_refuses_a_bad_regions_file_naming_the_field(tmp_path):
    regions = tmp_path / "regions.yaml"
    text = (EXAMPLES / "regions.yaml").read_text().replace("{gcp: 50, azure: 75}", "{gcp: 50}")
    regions.write_text(text)
    result = subprocess.run(
        [*PIPEORCH, "local", "up", "--regions", str(regions), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{regions}: document[0].spec.latencyMs: no round trip to 'azure'" in result.stderr


def listening(address: str) -> bool:
    """Something listens on ``address`` (binding there as a server would fails)."""
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        # As any server binds (a closed connection may linger in TIME_WAIT).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return True
        return False


def local(*args: str, timeout: float = 60, cwd: Path | None = None):
    return subprocess.run(
        [*PIPEORCH, "local", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_detached_up_runs_the_energy_example_and_down_leaves_nothing(tmp_path):
    # Relative, as `make demo` gives it: steps run elsewhere, and must still find their files.
    workdir, path = "demo", tmp_path / "demo"

    def demo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return local(*args, "--workdir", workdir, timeout=timeout, cwd=tmp_path)

    try:
        # capture_output: were a started process to hold the command's stdout or stderr,
        # this would not return until that process ended.
        up = demo(
            "up", "--detach", "--run", str(EXAMPLES / "energy-pipeline.yaml"),
            "--code-path", str(EXAMPLES), timeout=180,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        assert "pipeline/energy-report Succeeded in " in up.stdout
        assert "Largest consumer: **plant-c**." in up.stdout
        assert f"pipeorch local down --workdir {workdir}" in up.stdout

        state = statefile.load(path)
        assert state is not None
        assert state.detached
        assert statefile.path(path).stat().st_mode & 0o077 == 0
        assert sorted(p.kind for p in state.processes) == sorted(
            ["gateway", "store"] + ["replica"] * 3 + ["worker"] * 4
        )
        for proc in state.processes:
            assert proc.running, proc.name
            # Its own session: no terminal of ours, no Ctrl-C of ours.
            assert os.getsid(proc.pid) == proc.pid != os.getsid(0), proc.name

        status = demo("status")
        assert status.returncode == 0, status.stderr
        rows = [line.split() for line in status.stdout.splitlines()]
        assert sum(r[4:6] == ["running", "leader"] for r in rows if len(r) > 5) == 1
        assert sum(r[4] == "running" for r in rows if len(r) > 5) == 9

        again = demo("up", "--detach")
        assert again.returncode == 1
        assert f"a system is already running in {workdir} (detached" in again.stderr
        assert statefile.load(path) == state  # the refusal changed nothing

        down = demo("down")
        assert down.returncode == 0, down.stderr
        assert "stopped; state removed" in down.stdout
    finally:
        demo("down")
    assert not statefile.path(path).exists()
    assert [p.name for p in state.processes if p.running] == []
    assert [a for a in state.addresses() if listening(a)] == []
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
    again = demo("down")
    assert (again.returncode, again.stdout) == (0, f"nothing runs in {workdir}\n")


def test_local_commands_without_a_system_say_so(tmp_path):
    for command in (["status"], ["kill-leader"], ["partition", "aws"], ["heal"]):
        result = local(*command, "--workdir", str(tmp_path))
        assert result.returncode == 1, command
        assert f"no running system in {tmp_path}" in result.stderr, command
    result = local("up", "--detach", "--for", "5", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "--for: a detached system runs until `pipeorch local down`" in result.stderr


def test_faults_and_down_act_on_a_foreground_up_too(tmp_path):
    up = subprocess.Popen(
        [*PIPEORCH, "local", "up", "--no-gateway", "--no-store", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        state = wait_until(
            lambda: (s := statefile.load(tmp_path)) is not None and s.phase == "up" and s,
            60,
            what="the foreground system up",
        )
        assert not state.detached
        assert state.owner_pid == up.pid
        said = local("kill-worker", "aws", "--workdir", str(tmp_path))
        assert said.stdout.startswith("killed worker aws-w1"), said.stderr
        # Restarted by another command: not a child of the foreground up, stopped all the same.
        said = local("restart", "aws-w1", "--workdir", str(tmp_path))
        assert "aws-w1 serves" in said.stdout, said.stderr
        restarted = statefile.load(tmp_path)
        assert restarted is not None
        status = local("status", "--workdir", str(tmp_path))
        assert f"in the foreground (pid {up.pid})" in status.stdout

        down = local("down", "--workdir", str(tmp_path))
        assert down.returncode == 0, down.stderr
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
        local("down", "--workdir", str(tmp_path))
    assert up.stdout is not None
    assert "stopping..." in up.stdout.read()
    assert [p.name for p in [*state.processes, *restarted.processes] if p.running] == []
    assert not statefile.path(tmp_path).exists()


def test_output_into_a_closed_pipe_ends_quietly(cluster: LocalCluster):
    """`pipeorch cluster | head -0`: no traceback, the exit status of a SIGPIPE death."""
    cluster.wait_for_leader()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        done = subprocess.run(
            [*PIPEORCH, "cluster", "--control-plane", cluster.replicas["cp-0"].grpc],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_while_a_pipeline_runs_stops_everything_without_waiting_for_it(tmp_path):
    slow = tmp_path / "slow.yaml"
    slow.write_text(
        "apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: slow}\n"
        "spec:\n  steps:\n"
        f"    - {{name: nap, command: [{sys.executable}, -c, 'import time; time.sleep(600)']}}\n"
    )
    workdir = tmp_path / "system"
    up = subprocess.Popen(
        [*PIPEORCH, "local", "up", "--no-gateway", "--run", str(slow), "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    try:
        for line in up.stdout:  # until the step is running
            if "nap" in line and "Running" in line:
                break
        state = statefile.load(workdir)
        assert state is not None
        up.send_signal(signal.SIGINT)
        # Far sooner than the step's ten minutes: the follow gives up within a watch period.
        assert up.wait(60) == 130
    finally:
        if up.poll() is None:
            up.kill()
        local("down", "--workdir", str(workdir))
    rest = up.stdout.read()
    assert "stopped following it; it was still running" in rest
    assert "stopping..." in rest
    assert [p.name for p in state.processes if p.running] == []
