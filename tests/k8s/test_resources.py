"""The generated CRDs on a real API server: installed and Established, the examples accepted,
bad manifests refused naming their field, kubectl listing, printer columns and conditions."""

from __future__ import annotations

import json
import textwrap

import pytest

from pipeorch.errors import InvalidInput
from pipeorch.local.k8s import CRD_NAMES, KwokCluster

from .conftest import ROOT, get_json, table


def test_the_crds_are_established(crds: KwokCluster) -> None:
    for name in CRD_NAMES:
        crd = get_json(crds, "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize("example", ["energy-pipeline.yaml", "ml-pipeline.yaml"])
def test_the_examples_are_accepted(crds: KwokCluster, namespace: str, example: str) -> None:
    crds.apply((ROOT / "examples" / example).read_text(), "-n", namespace)
    (pipeline,) = get_json(crds, "pipelines", "-n", namespace)["items"]
    spec = pipeline["spec"]
    assert spec["placement"] == "locality", "defaulted by the API server"
    assert all(step["timeoutSeconds"] == 3600 for step in spec["steps"])
    assert spec["steps"][0]["params"], "params are kept as written"


def pipeline(spec: str, name: str = "bad") -> str:
    head = f"apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n"
    return head + "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")


BAD = [
    ("run-and-command", pipeline('steps: [{name: a, run: "m:f", command: [x]}]'),
     "spec.steps[0]", "exactly one of `run` or `command`"),
    ("neither-run-nor-command", pipeline("steps: [{name: a}]"),
     "spec.steps[0]", "exactly one of `run` or `command`"),
    ("bad-step-name", pipeline('steps: [{name: Load_Data, run: "m:f"}]'),
     "spec.steps[0].name", "should match"),
    ("unknown-field", pipeline('steps: [{name: a, run: "m:f", colour: red}]'),
     "spec.steps[0].colour", "unknown field"),
    ("negative-retry-limit", pipeline('steps: [{name: a, run: "m:f", retry: {limit: -1}}]'),
     "spec.steps[0].retry.limit", "greater than or equal to 0"),
    ("duplicate-step", pipeline('steps: [{name: a, run: "m:f"}, {name: a, run: "m:g"}]'),
     "spec.steps[1]", "Duplicate value"),
    ("duplicate-output", pipeline('steps: [{name: a, run: "m:f", outputs: [x, x]}]'),
     "spec.steps[0].outputs[1]", "Duplicate value"),
    ("no-steps", pipeline("steps: []"), "spec.steps", "at least 1 items"),
    ("zero-timeout", pipeline('steps: [{name: a, run: "m:f", timeoutSeconds: 0}]'),
     "spec.steps[0].timeoutSeconds", "greater than 0"),
    ("unknown-placement", pipeline('placement: nearest\nsteps: [{name: a, run: "m:f"}]'),
     "spec.placement", "Unsupported value"),
    ("pinned-without-region", pipeline('placement: pinned\nsteps: [{name: a, run: "m:f"}]'),
     "spec.placement", "every step must name its region"),
    ("not-a-callable", pipeline('steps: [{name: a, run: "python script.py"}]'),
     "spec.steps[0].run", "should match"),
    ("name-not-a-label", pipeline('steps: [{name: a, run: "m:f"}]', name="energy.v2"),
     "metadata.name", "should match"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("manifest", "field", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_pipeline_is_refused_naming_its_field(
    crds: KwokCluster, namespace: str, manifest: str, field: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        crds.apply(manifest, "-n", namespace, "--dry-run=server")
    assert refused.value.field == field
    assert says in refused.value.problem


def test_kinds_short_names_and_the_category_are_listed(crds: KwokCluster, namespace: str) -> None:
    crds.apply((ROOT / "examples" / "energy-pipeline.yaml").read_text(), "-n", namespace)
    crds.apply(task("energy-report", "generate"), "-n", namespace)
    crds.apply(region("aws"), "-n", namespace)
    expected = {
        "pipeline.pipeorch.dev/energy-report",
        "task.pipeorch.dev/energy-report.generate",
        "cloudregion.pipeorch.dev/aws",
    }
    for kinds in ("pipelines,tasks,cloudregions", "pl,ptask,creg", "pipeorch"):
        out = crds.kubectl("get", kinds, "-n", namespace, "-o", "name").stdout
        assert set(out.split()) == expected, kinds
    exact = crds.kubectl("get", "tasks.pipeorch.dev", "-n", namespace, "-o", "name").stdout
    assert exact.split() == ["task.pipeorch.dev/energy-report.generate"]


def task(pipeline: str, step: str) -> str:
    return json.dumps(
        {
            "apiVersion": "pipeorch.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": f"{pipeline}.{step}"},
            "spec": {"pipeline": pipeline, "step": step, "taskId": f"{pipeline}.{step}"},
        }
    )


def region(name: str, **spec: object) -> str:
    return json.dumps(
        {
            "apiVersion": "pipeorch.dev/v1alpha1",
            "kind": "CloudRegion",
            "metadata": {"name": name},
            "spec": {"provider": name, **spec},
        }
    )


def patch_status(cluster: KwokCluster, namespace: str, obj: str, status: dict[str, object]) -> None:
    body = json.dumps({"status": status})
    cluster.kubectl(
        "patch", obj, "-n", namespace, "--subresource=status", "--type=merge", "-p", body
    )


def test_pipeline_columns_and_kubectl_wait(crds: KwokCluster, namespace: str) -> None:
    crds.apply((ROOT / "examples" / "energy-pipeline.yaml").read_text(), "-n", namespace)
    (row,) = table(crds, "pipelines", "-n", namespace)
    assert list(row) == ["NAME", "PHASE", "PROGRESS", "AGE", "MESSAGE"]
    assert (row["NAME"], row["PHASE"]) == ("energy-report", "")
    succeeded = {"type": "Succeeded", "status": "True", "reason": "AllStepsSucceeded"}
    status = {"phase": "Succeeded", "progress": "3/3", "message": "done", "revision": 12}
    patch_status(crds, namespace, "pipeline/energy-report", {**status, "conditions": [succeeded]})
    (row,) = table(crds, "pl", "-n", namespace)
    assert (row["PHASE"], row["PROGRESS"], row["MESSAGE"]) == ("Succeeded", "3/3", "done")
    crds.kubectl(
        "wait", "--for=condition=Succeeded", "pipeline/energy-report", "-n", namespace,
        "--timeout=10s",
    )  # fmt: skip


def test_task_columns_message_only_wide(crds: KwokCluster, namespace: str) -> None:
    crds.apply(task("energy-report", "analyze"), "-n", namespace)
    status = {"phase": "Running", "region": "gcp", "worker": "gcp-7f3a", "attempt": 2,
              "message": "retrying after exit 1", "failureClass": "application"}  # fmt: skip
    patch_status(crds, namespace, "task/energy-report.analyze", status)
    (row,) = table(crds, "tasks", "-n", namespace)
    assert list(row) == ["NAME", "PIPELINE", "STEP", "PHASE", "REGION", "WORKER", "ATTEMPT", "AGE"]
    assert [row[c] for c in ("PIPELINE", "STEP", "PHASE", "REGION", "WORKER", "ATTEMPT")] == [
        "energy-report", "analyze", "Running", "gcp", "gcp-7f3a", "2",
    ]  # fmt: skip
    (wide,) = table(crds, "tasks.pipeorch.dev", "-n", namespace, "-o", "wide")
    assert wide["MESSAGE"] == "retrying after exit 1"


def test_task_status_keeps_every_field(crds: KwokCluster, namespace: str) -> None:
    """The API server drops status fields its schema does not declare: all must survive."""
    crds.apply(task("p", "a"), "-n", namespace)
    status = {
        "phase": "Succeeded", "region": "aws", "worker": "aws-1", "attempt": 1,
        "message": "", "failureClass": "infrastructure",
        "startedAt": "2026-01-02T03:04:05Z", "finishedAt": "2026-01-02T03:04:06Z",
        "estimatedTransferSeconds": 0.25, "observedGeneration": 1,
        "outputs": [{"name": "x.csv", "key": "runs/p/a/attempt-1/x.csv", "size": 10,
                     "sha256": "0" * 64}],
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Done",
                        "message": "ok", "lastTransitionTime": "2026-01-02T03:04:06Z"}],
    }  # fmt: skip
    patch_status(crds, namespace, "ptask/p.a", status)
    assert get_json(crds, "ptask/p.a", "-n", namespace)["status"] == status


def test_task_spec_cannot_change(crds: KwokCluster, namespace: str) -> None:
    crds.apply(task("p", "a"), "-n", namespace)
    with pytest.raises(InvalidInput) as refused:
        crds.apply(task("p", "a").replace('"step": "a"', '"step": "b"'), "-n", namespace)
    assert refused.value.field == "spec"
    assert "immutable" in refused.value.problem


def test_cloud_region_defaults_and_columns(crds: KwokCluster, namespace: str) -> None:
    crds.apply(region("gcp", latencyMs={"aws": 40, "azure": 55}), "-n", namespace)
    spec = get_json(crds, "cloudregion/gcp", "-n", namespace)["spec"]
    assert spec["jitterMs"] == 5
    assert spec["workers"] == {"replicas": 1, "slots": 4}
    assert spec["objectStore"] is False
    patch_status(crds, namespace, "creg/gcp", {"readyWorkers": 1})
    (row,) = table(crds, "cloudregions", "-n", namespace)
    assert row == {"NAME": "gcp", "PROVIDER": "gcp", "READY WORKERS": "1", "AGE": row["AGE"]}
    with pytest.raises(InvalidInput) as refused:
        crds.apply(region("azure", latencyMs={"AWS East": 40}), "-n", namespace)
    assert refused.value.field == "spec.latencyMs"


def test_a_pipeline_spec_cannot_be_edited_once_submitted(crds: KwokCluster, namespace: str) -> None:
    manifest = (ROOT / "examples" / "energy-pipeline.yaml").read_text()
    crds.apply(manifest, "-n", namespace)
    crds.apply(manifest, "-n", namespace)  # the same again changes nothing: accepted
    with pytest.raises(InvalidInput) as refused:
        crds.apply(manifest.replace("zscore: 4.0", "zscore: 3.0"), "-n", namespace)
    assert refused.value.field == "spec"
    assert "spec is immutable once submitted" in refused.value.problem
