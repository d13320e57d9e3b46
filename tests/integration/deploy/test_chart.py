"""The Helm chart with the real helm and kube-score: lint, render with each ci/ values file,
the properties the deployment depends on, and the schema refusing bad values. Installing it
on a real API server is tested in the k8s tier."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeorch.local.tools import find as find_tool

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "pipeline-orchestrator"
KUBE_VERSION = "1.36.3"
#: kube-score checks this chart declines, and why.
DELIBERATE = {
    # kind loads the images into its nodes: pulling "Always" would fail there.
    "container-image-pull-policy",
    # No CPU limits: CFS throttling delays Raft heartbeats into elections. Memory is limited.
    "container-resources",
    # One replica per region pool comes from topologySpreadConstraints (stronger: per pool).
    "statefulset-has-host-podantiaffinity",
    "deployment-has-host-podantiaffinity",
    # The demo MinIO is a single server on one volume (and so recreated, not rolled).
    "deployment-replicas",
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_tool("helm")), *args], capture_output=True, text=True, check=check
    )


def render(*values: str) -> list[dict[str, Any]]:
    args = ["template", "po", str(CHART), "-n", "demo", "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", v]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return doc


def containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(object name, pod spec, container) for every container of every workload."""
    found = []
    for d in docs:
        spec = d.get("spec", {})
        pod = spec.get("template", {}).get("spec") or (spec if d["kind"] == "Pod" else None)
        for c in (pod or {}).get("containers", []):
            found.append((d["metadata"]["name"], pod, c))
    return found


def test_helm_lint_is_clean():
    done = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "values", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.stem
)
def test_each_ci_values_file_renders_and_kube_score_finds_nothing_critical(values):
    docs = render(str(values))
    assert any(d["kind"] == "StatefulSet" for d in docs)
    rendered = helm(
        "template", "po", str(CHART), "-n", "demo", "--kube-version", KUBE_VERSION,
        "-f", str(values),
    ).stdout  # fmt: skip
    score = subprocess.run(
        [str(find_tool("kube-score")), "score", "--ignore-test", ",".join(sorted(DELIBERATE)), "-"],
        input=rendered,
        capture_output=True,
        text=True,
    )
    assert score.returncode == 0, score.stdout


def test_the_control_plane_is_three_replicas_one_per_pool_with_a_volume_each():
    docs = render()
    sts = one(docs, "StatefulSet")
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == 3
    (spread,) = pod["topologySpreadConstraints"]
    assert (spread["maxSkew"], spread["whenUnsatisfiable"]) == (1, "DoNotSchedule")
    assert spread["topologyKey"] == "topology.kubernetes.io/region"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Raft identities are the pods' stable names, reachable before they are ready.
    members = [a for i, a in enumerate(c["args"]) if c["args"][i - 1] == "--member"]
    headless = one(docs, "Service", "-peers")
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert members == [
        f"po-pipeline-orchestrator-control-plane-{i}=po-pipeline-orchestrator-control-plane-{i}"
        f".{headless['metadata']['name']}.demo.svc.cluster.local:7000"
        for i in range(3)
    ]
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_every_container_but_netem_is_restricted_and_netem_says_why_not():
    for name, pod, c in containers(render()):
        ctx = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        if name.endswith("-netem"):
            assert pod["hostNetwork"] is True
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
            continue
        assert ctx["runAsNonRoot"] is True, name
        assert ctx["allowPrivilegeEscalation"] is False, name
        assert ctx["capabilities"] == {"drop": ["ALL"]}, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
    netem = (CHART / "templates" / "netem.yaml").read_text()
    assert "which takes the host network namespace and NET_ADMIN" in netem


def test_rbac_has_no_wildcards():
    for d in render():
        for rule in d.get("rules", []) if d["kind"] in ("Role", "ClusterRole") else []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), (d["metadata"]["name"], rule)


def test_a_cloud_region_per_value_and_the_store_lives_in_one():
    regions = {d["metadata"]["name"]: d["spec"] for d in render() if d["kind"] == "CloudRegion"}
    assert sorted(regions) == ["aws", "azure", "gcp"]
    assert [r for r, spec in regions.items() if spec["objectStore"]] == ["aws"]
    assert regions["aws"]["workers"]["replicas"] == 2
    assert regions["aws"]["latencyMs"] == {"gcp": 50, "azure": 75}


def test_every_values_key_has_a_comment():
    lines = (CHART / "values.yaml").read_text().splitlines()
    commented: set[str] = set()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(?:- )?([A-Za-z][\w-]*):", line)
        if not m:
            continue
        key = m.group(2)
        previous = lines[i - 1].strip() if i else ""
        if previous.startswith("#"):
            commented.add(key)
        assert key in commented, f"values.yaml line {i + 1}: {key!r} has no comment"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bogus=1", "additional properties 'bogus' not allowed"),
        ("controlPlane.replicas=0", "/controlPlane/replicas"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("minio.enabled=false", "allOf"),  # an external store is then required
    ],
)
def test_the_schema_refuses_bad_values(override, message):
    done = helm("template", "po", str(CHART), "--set", override, check=False)
    assert done.returncode != 0
    assert message in done.stderr
