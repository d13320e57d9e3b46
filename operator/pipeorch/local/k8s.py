"""A real Kubernetes control plane on loopback: for the k8s test tier and `make k8s-up`.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the pinned binaries of
`make tools`, started by ``kwokctl --runtime binary`` (see notes/k8s-test-cluster.md); the KWOK
controller fakes the kubelets of one node per region pool (aws, gcp, azure), labelled
``topology.kubernetes.io/region`` and ``pipeorch.dev/region``. There is no kubelet and no
container runtime: pods are scheduled by the real scheduler and reported Running by KWOK.

Everything a cluster owns (PKI, etcd data, logs, pid files, its kubeconfig) lives under its
work directory; the user's ~/.kube/config is never read or written. Every component listens on
127.0.0.1 on ports picked here, so that clusters with different names and directories can run
side by side.

    python -m pipeorch.local.k8s up      # prints `export KUBECONFIG=...`
    python -m pipeorch.local.k8s down
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeorch.errors import InvalidInput, PipeorchError
from pipeorch.local.processes import free_ports
from pipeorch.local.tools import find as find_tool

REGIONS = ("aws", "gcp", "azure")
REGION_LABELS = ("topology.kubernetes.io/region", "pipeorch.dev/region")
#: kwokctl option -> the pinned binary it runs.
BINARIES = {
    "etcdBinary": "etcd",
    "kubeApiserverBinary": "kube-apiserver",
    "kubeControllerManagerBinary": "kube-controller-manager",
    "kubeSchedulerBinary": "kube-scheduler",
    "kwokControllerBinary": "kwok",
    "kubectlBinary": "kubectl",
}
PORTS = (
    "kubeApiserverPort",
    "etcdPort",
    "etcdPeerPort",
    "kubeControllerManagerPort",
    "kubeSchedulerPort",
    "kwokControllerPort",
)
CRD_NAMES = ("pipelines.pipeorch.dev", "tasks.pipeorch.dev", "cloudregions.pipeorch.dev")


class KubeError(PipeorchError):
    """The test cluster or kubectl failed; the message carries what they printed."""


@dataclass
class KwokCluster:
    """One cluster: ``name`` and ``workdir`` identify it (``kwokctl`` keeps it by both)."""

    workdir: Path
    name: str = "pipeorch"
    regions: tuple[str, ...] = REGIONS

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def cluster_dir(self) -> Path:
        return self.workdir / "clusters" / self.name

    @property
    def cache_dir(self) -> Path:
        """kubectl's discovery cache (its default is under ~/.kube)."""
        return self.workdir / "kube-cache"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.kwokctl.yaml"

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 90.0, attempts: int = 3) -> float:
        """Create the cluster and its region nodes; return the seconds it took. Ports are
        picked free just before; a start that loses one to a race is retried on new ones."""
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.config_path.write_text(yaml.safe_dump(kwokctl_config(free_ports(len(PORTS)))))
            try:
                self._create(timeout)
                break
            except KubeError:
                self.stop()
                if attempt == attempts:
                    raise
        try:
            self._populate(timeout)
        except BaseException:
            self.stop()  # a failed start leaves nothing running
            raise
        return time.monotonic() - began

    def _create(self, timeout: float) -> None:
        self._kwokctl("create", "cluster", "--kubeconfig", str(self.kubeconfig), timeout=timeout)
        self._wait(lambda: self._ok("get", "--raw", "/readyz"), timeout, "the API server ready")

    def _populate(self, timeout: float) -> None:
        # The nodes are created while the controller manager is still starting up (it takes
        # the longest); pods are refused until it has made the default service account.
        nodes = [node_manifest(region) for region in self.regions]
        self.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
        self._wait(
            lambda: self._ok("get", "serviceaccount", "default", "-n", "default"),
            timeout,
            "the default service account",
        )
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", f"--timeout={timeout}s")

    def stop(self, timeout: float = 15.0) -> None:
        """Delete the cluster; return only when none of its processes runs and none of its
        ports is bound."""
        if not self.cluster_dir.exists():
            return
        pids = self.pids()
        ports = self.ports() if pids else []  # a cluster that does not run binds nothing
        self._kwokctl("delete", "cluster", "--kubeconfig", str(self.kubeconfig), check=False)
        deadline = time.monotonic() + timeout
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)  # a process of this cluster, by its pid file
        for port in ports:
            while not _port_free(port):
                if time.monotonic() > deadline:
                    raise KubeError(f"port {port} of cluster {self.name} still bound after stop")
                time.sleep(0.05)

    def running(self) -> bool:
        """Every component of the cluster runs."""
        pid_files = list((self.cluster_dir / "pids").glob("*.pid"))
        return bool(pid_files) and len(self.pids()) == len(pid_files)

    def pids(self) -> list[int]:
        """The live processes of this cluster. A pid file can outlive its process (a reboot)
        and its number be reused: a pid counts only while it runs a binary of this cluster."""
        pid_dir = self.cluster_dir / "pids"
        pids = [int(p.read_text().strip()) for p in sorted(pid_dir.glob("*.pid"))]
        return [pid for pid in pids if _runs_from(pid, self.cluster_dir)]

    def ports(self) -> list[int]:
        if not self.config_path.exists():
            return []
        options = yaml.safe_load(self.config_path.read_text())["options"]
        return [int(options[key]) for key in PORTS]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports()[0]}"

    # ---- what the cluster holds --------------------------------------------------------------

    def install_crds(self, directory: Path, timeout: float = 60.0) -> None:
        self.kubectl("apply", "-f", str(directory))
        names = [f"crd/{name}" for name in CRD_NAMES]
        self.kubectl("wait", "--for=condition=Established", *names, f"--timeout={timeout}s")
        # The discovery cache predates the new kinds: `kubectl get pipeorch` (a category) would
        # not find them until it expires.
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def apply(self, manifest: str, *args: str) -> str:
        """``kubectl apply`` a manifest; a rejection by the API server becomes InvalidInput
        naming the field the server named."""
        result = self.kubectl("apply", "-f", "-", *args, input=manifest, check=False)
        if result.returncode != 0:
            raise parse_rejection(result.stderr) or KubeError(result.stderr.strip())
        return result.stdout

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(find_tool("kubectl")), "--kubeconfig", str(self.kubeconfig)]
        argv += ["--cache-dir", str(self.cache_dir), *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and result.returncode != 0:
            raise KubeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of every component's log, for a failure report."""
        out = []
        for log in sorted((self.cluster_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    # ---- plumbing ----------------------------------------------------------------------------

    def _kwokctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> None:
        argv = [str(find_tool("kwokctl")), "--name", self.name, "-c", str(self.config_path)]
        env = {**os.environ, "KWOK_WORKDIR": str(self.workdir), "KUBECONFIG": str(self.kubeconfig)}
        try:
            result = subprocess.run(
                [*argv, *args], capture_output=True, text=True, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired as e:
            raise KubeError(f"kwokctl {' '.join(args)} timed out\n{self.log_tail()}") from e
        if check and result.returncode != 0:
            raise KubeError(
                f"kwokctl {' '.join(args)} failed:\n{result.stderr.strip()}\n{self.log_tail()}"
            )

    def _ok(self, *args: str) -> bool:
        return self.kubectl(*args, check=False, timeout=10).returncode == 0

    def _wait(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                raise KubeError(f"{what}: not within {timeout:g}s\n{self.log_tail()}")
            time.sleep(0.1)


def kwokctl_config(
    ports: Sequence[int], binary: Callable[[str], Path] = find_tool
) -> dict[str, Any]:
    """kwokctl's configuration: the pinned binaries (a missing one would be downloaded), our
    ports, and loopback only (its default is every interface)."""
    options: dict[str, Any] = {"runtime": "binary", "bindAddress": "127.0.0.1"}
    options.update({key: str(binary(name)) for key, name in BINARIES.items()})
    options.update(dict(zip(PORTS, ports, strict=True)))
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
    }


def node_manifest(region: str, index: int = 0) -> dict[str, Any]:
    """A fake node of a region pool: KWOK manages it and reports it Ready."""
    name = f"kwok-{region}-{index}"
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                **dict.fromkeys(REGION_LABELS, region),
                "kubernetes.io/hostname": name,  # as every real node has: volumes pin by it
                "type": "kwok",
            },
        },
        "spec": {"providerID": f"kwok://{name}"},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            # An address of its own per node, as on kind: the netem rules target them.
            "addresses": [
                {"type": "InternalIP", "address": node_ip(region, index)},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def node_ip(region: str, index: int = 0) -> str:
    """A stable private address for a fake node (10.89.<region>.<index + 1>)."""
    return f"10.89.{sum(region.encode()) % 250}.{index + 1}"


def parse_rejection(stderr: str) -> InvalidInput | None:
    """The first field the API server named in refusing an object, as InvalidInput; None when
    the failure was not a validation error. Two shapes: schema and CEL errors
    (``The Pipeline "x" is invalid: spec.steps[0]: Invalid value: ...``, one per line after
    ``* `` when several) and strict field validation (``unknown field "spec.x"``)."""
    marker = 'unknown field "'
    if marker in stderr:
        field = stderr.split(marker, 1)[1].split('"', 1)[0]
        return InvalidInput(field, "unknown field")
    if " is invalid: " not in stderr:
        return None
    detail = stderr.split(" is invalid: ", 1)[1].strip()
    first = detail.removeprefix("* ").splitlines()[0].removeprefix("* ")
    field, _, problem = first.partition(": ")
    return InvalidInput(field, problem.strip())


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its (re)parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _runs_from(pid: int, directory: Path) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return argv0.startswith(f"{directory}/")


def _port_free(port: int) -> bool:
    # SO_REUSEADDR, as the servers bind: only a listener, not TIME_WAIT, makes a port taken.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---- make k8s-up / k8s-down -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeorch.local.k8s")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path(".pipeorch/k8s"), help="work directory")
    parser.add_argument("--name", default="pipeorch")
    parser.add_argument("--crds", type=Path, default=Path("crds"), help="CRDs to install on up")
    args = parser.parse_args(argv)
    cluster = KwokCluster(args.dir, args.name)
    try:
        if args.command == "down":
            cluster.stop()
            print(f"cluster {cluster.name} stopped")
            return 0
        if cluster.running():
            print(f"cluster {cluster.name} already running at {cluster.server}")
        else:
            cluster.stop()  # what a crashed or rebooted run left behind
            took = cluster.start()
            cluster.install_crds(args.crds)
            print(
                f"cluster {cluster.name} up in {took:.1f}s at {cluster.server}: "
                f"nodes in {', '.join(cluster.regions)}; CRDs from {args.crds}/ installed"
            )
    except PipeorchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
