"""The Helm chart installed by the real helm on the real API server, scheduled by the real
scheduler onto the KWOK nodes of the three region pools. (KWOK runs no containers: what the
pods do is tested elsewhere; here it is what Kubernetes makes of the chart.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeorch.local.cluster import wait_until
from pipeorch.local.k8s import KwokCluster
from pipeorch.local.tools import find as find_tool

from .conftest import ROOT, get_json

CHART = ROOT / "charts" / "pipeline-orchestrator"
REGIONS = ("aws", "gcp", "azure")


def helm(cluster: KwokCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_tool("helm")), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=True,
    )


def local_volumes(cluster: KwokCluster, namespace: str, tmp: Path) -> str:
    """A StorageClass that binds when a pod is placed, and a volume on each region's node for
    each replica (and MinIO): the scheduler places pods and volumes together, as on kind."""
    nodes = {n["metadata"]["labels"]["pipeorch.dev/region"]: n["metadata"]["name"]
             for n in get_json(cluster, "nodes")["items"]}  # fmt: skip
    docs = [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": namespace},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
    }]  # fmt: skip
    for region in REGIONS:
        for i in range(2):
            docs.append({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"{namespace}-{region}-{i}"},
                "spec": {
                    "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": namespace,
                    "local": {"path": str(tmp / f"{region}-{i}")},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In",
                         "values": [nodes[region]]}]}]}},
                },
            })  # fmt: skip
    cluster.apply("\n---\n".join(json.dumps(d) for d in docs))
    return namespace


@pytest.fixture
def release(k8s: KwokCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    storage_class = local_volumes(k8s, namespace, tmp_path)
    helm(
        k8s, "install", "po", str(CHART), "-n", namespace,
        "--set", f"controlPlane.storage.storageClassName={storage_class}",
        "--set", f"minio.storageClassName={storage_class}",
    )  # fmt: skip
    yield "po"
    subprocess.run(
        [str(find_tool("helm")), "--kubeconfig", str(k8s.kubeconfig), "uninstall", "po",
         "-n", namespace], capture_output=True,
    )  # fmt: skip


def pods(cluster: KwokCluster, namespace: str, component: str) -> list[dict]:
    selector = f"app.kubernetes.io/component={component}"
    return get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]


def test_the_control_plane_lands_one_replica_per_region_pool(k8s, namespace, release):
    def placed() -> dict[str, str] | None:
        found = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in
                 pods(k8s, namespace, "control-plane")}  # fmt: skip
        return found if len(found) == 3 and all(found.values()) else None

    placement = wait_until(placed, 60, what="three control-plane pods scheduled")
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"]["pipeorch.dev/region"]
             for n in get_json(k8s, "nodes")["items"]}  # fmt: skip
    assert sorted(nodes[node] for node in placement.values()) == sorted(REGIONS)
    for crd in ("pipelines", "tasks", "cloudregions"):
        k8s.kubectl("wait", "--for=condition=Established", f"crd/{crd}.pipeorch.dev")
    regions = get_json(k8s, "cloudregions.pipeorch.dev", "-n", namespace)["items"]
    assert sorted(r["metadata"]["name"] for r in regions) == sorted(REGIONS)
    (minio,) = pods(k8s, namespace, "minio")
    wait_until(
        lambda: get_json(k8s, "pod", "-n", namespace, minio["metadata"]["name"])["spec"].get(
            "nodeName"
        ),
        60,
        what="MinIO scheduled",
    )
    minio = get_json(k8s, "pod", "-n", namespace, minio["metadata"]["name"])
    assert nodes[minio["spec"]["nodeName"]] == "aws"


# (verb, resource, namespaced, allowed) for the operator's ServiceAccount.
CAN_I = [
    ("create", "tasks.pipeorch.dev", True, True),
    ("delete", "tasks.pipeorch.dev", True, True),
    ("patch", "pipelines.pipeorch.dev/status", True, True),
    ("watch", "cloudregions.pipeorch.dev", True, True),
    ("create", "deployments.apps", True, True),
    ("patch", "configmaps", True, True),
    ("create", "events", True, True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", False, True),
    ("delete", "pipelines.pipeorch.dev", True, False),
    ("create", "pipelines.pipeorch.dev", True, False),
    ("get", "secrets", True, False),
    ("create", "pods", True, False),
    ("list", "nodes", False, False),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", False, False),
    ("delete", "namespaces", False, False),
    ("create", "clusterroles.rbac.authorization.k8s.io", False, False),
]


def test_the_operator_can_do_what_it_needs_and_nothing_more(k8s, namespace, release):
    account = f"system:serviceaccount:{namespace}:po-pipeline-orchestrator-control-plane"
    answers = {}
    for verb, resource, namespaced, _ in CAN_I:
        scope = ["-n", namespace] if namespaced else []
        done = k8s.kubectl("auth", "can-i", verb, resource, "--as", account, *scope, check=False)
        answers[(verb, resource)] = done.stdout.strip() == "yes"
    expected = {(verb, resource): allowed for verb, resource, _, allowed in CAN_I}
    assert answers == expected
    other = k8s.kubectl(
        "auth", "can-i", "create", "tasks.pipeorch.dev", "--as", account, "-n", "default",
        check=False,
    )  # fmt: skip
    assert other.stdout.strip() == "no"  # namespaced: nothing in other namespaces


def test_upgrade_keeps_the_secrets_and_uninstall_leaves_nothing(k8s, namespace, release):
    def secret(name: str) -> dict:
        return get_json(k8s, "secret", "-n", namespace, name)["data"]

    raft = secret("po-pipeline-orchestrator-raft")
    store = secret("po-pipeline-orchestrator-minio")
    helm(k8s, "upgrade", "po", str(CHART), "-n", namespace, "--reuse-values",
         "--set", "netem.period=30")  # fmt: skip
    assert secret("po-pipeline-orchestrator-raft") == raft
    assert secret("po-pipeline-orchestrator-minio") == store
    daemonset = get_json(k8s, "daemonset", "-n", namespace, "po-pipeline-orchestrator-netem")
    assert daemonset["spec"]["template"]["spec"]["containers"][0]["args"] == ["--period", "30"]

    helm(k8s, "uninstall", "po", "-n", namespace, "--wait")

    def leftovers() -> list[str]:
        kinds = "all,configmaps,secrets,pvc,serviceaccounts,roles,rolebindings,networkpolicies,pdb"
        items = get_json(k8s, kinds, "-n", namespace)["items"]
        names = [f"{i['kind']}/{i['metadata']['name']}" for i in items]
        cluster_wide = get_json(k8s, "clusterroles,clusterrolebindings")["items"]
        names += [f"{i['kind']}/{i['metadata']['name']}" for i in cluster_wide
                  if i["metadata"]["name"].startswith(namespace)]  # fmt: skip
        # What every namespace has on its own.
        ignored = ("ConfigMap/kube-root-ca.crt", "ServiceAccount/default")
        return [n for n in names if n not in ignored]

    wait_until(lambda: not leftovers(), 60, what="nothing left after uninstall")
