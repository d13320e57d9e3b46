"""The CRD builder: structural schemas, names, printer columns, and committed files that match."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from pipeorch.core.runs import RunPhase, TaskPhase
from pipeorch.errors import InvalidInput
from pipeorch.k8s import crds
from pipeorch.k8s.schema import Schema, at, structural

ROOT = Path(__file__).resolve().parents[3]
BY_KIND = {c["spec"]["names"]["kind"]: c for c in crds.build()}
#: Keywords the API server refuses in a CRD schema, or that mean pydantic leaked through.
FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const", "uniqueItems"}
#: Short names of built-in resources (kubectl api-resources) that ours must not shadow.
BUILTIN_SHORT_NAMES = {
    "cm", "crd", "crds", "cs", "csr", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits", "netpol",
    "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts",
    "svc",
}  # fmt: skip


def schema_of(kind: str) -> Schema:
    version = BY_KIND[kind]["spec"]["versions"][0]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


ALL_NODES = [(kind, path, node) for kind in BY_KIND for path, node in nodes(schema_of(kind))]
NODE_IDS = [f"{kind}:{path or '(root)'}" for kind, path, _ in ALL_NODES]
PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


@pytest.mark.parametrize(("kind", "path", "node"), ALL_NODES, ids=NODE_IDS)
def test_every_node_is_structural(kind: str, path: str, node: Schema) -> None:
    assert not FORBIDDEN & set(node), f"{kind} {path}: {FORBIDDEN & set(node)}"
    assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") is True
    additional = node.get("additionalProperties")
    assert additional is None or isinstance(additional, dict), "a boolean is refused"
    assert not (additional and "properties" in node), "properties or additionalProperties"
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        assert node.get(bound, True) is True, "OpenAPI v3.0: a flag, not a number"
    assert node.get("default", 0) is not None
    if node.get("x-kubernetes-list-type") == "map":
        keys = node["x-kubernetes-list-map-keys"]
        assert set(keys) <= set(node["items"].get("required", [])), "map keys must be required"


@pytest.mark.parametrize(("kind", "path", "node"), ALL_NODES, ids=NODE_IDS)
def test_defaults_satisfy_their_own_schema(kind: str, path: str, node: Schema) -> None:
    if "default" not in node:
        return
    value = node["default"]
    assert isinstance(value, PYTHON_TYPES[node["type"]])
    assert value in node.get("enum", [value])
    if node["type"] in ("integer", "number"):
        assert node.get("minimum", value) <= value <= node.get("maximum", value)


def test_unknown_fields_are_kept_only_in_step_params() -> None:
    kept = [
        f"{kind} {path}"
        for kind, path, node in ALL_NODES
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert kept == ["Pipeline spec.steps[].params"]


def test_names_category_and_status_subresource() -> None:
    short = [n for c in BY_KIND.values() for n in c["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short))
    assert not set(short) & BUILTIN_SHORT_NAMES
    for kind, c in BY_KIND.items():
        spec = c["spec"]
        assert c["metadata"]["name"] == f"{spec['names']['plural']}.pipeorch.dev"
        assert (spec["group"], spec["scope"]) == ("pipeorch.dev", "Namespaced")
        assert spec["names"]["categories"] == ["pipeorch"]
        assert spec["names"]["singular"] == kind.lower()
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
        assert schema_of(kind)["required"] == ["spec"]


COLUMNS = {
    "Pipeline": ["Phase", "Progress", "Age", "Message"],
    "Task": ["Pipeline", "Step", "Phase", "Region", "Worker", "Attempt", "Age", "Message"],
    "CloudRegion": ["Provider", "Ready Workers", "Age"],
}


@pytest.mark.parametrize("kind", COLUMNS)
def test_printer_columns(kind: str) -> None:
    columns = BY_KIND[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == COLUMNS[kind]
    wide_only = [c["name"] for c in columns if c.get("priority", 0) == 1]
    assert wide_only == (["Message"] if kind == "Task" else [])
    for c in columns:
        if c["name"] == "Age":
            assert (c["jsonPath"], c["type"]) == (".metadata.creationTimestamp", "date")
            continue
        node = at(schema_of(kind), c["jsonPath"].removeprefix(".").replace("[*]", "[]"))
        assert c["type"] == node["type"], f"{c['name']} shows a {node['type']}"


@pytest.mark.parametrize("kind", COLUMNS)
def test_conditions_are_a_map_by_type(kind: str) -> None:
    conditions = at(schema_of(kind), "status.conditions")
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_phases_come_from_the_core() -> None:
    pipeline = at(schema_of("Pipeline"), "status.phase")["enum"]
    assert set(pipeline) == {p.value for p in RunPhase} | {"Pending", "Invalid"}
    assert at(schema_of("Task"), "status.phase")["enum"] == [p.value for p in TaskPhase]


def test_pipeline_rules_that_the_api_server_enforces() -> None:
    schema = schema_of("Pipeline")
    assert at(schema, "metadata.name")["maxLength"] == 63
    steps = at(schema, "spec.steps")
    assert steps["x-kubernetes-list-type"] == "map", "unique step names"
    assert steps["x-kubernetes-list-map-keys"] == ["name"]
    (xor,) = steps["items"]["x-kubernetes-validations"]
    assert xor["rule"] == "has(self.run) != has(self.command)"
    assert at(schema, "spec.steps[].outputs")["x-kubernetes-list-type"] == "set"
    assert at(schema, "spec.steps[].retry.limit")["minimum"] == 0
    timeout = at(schema, "spec.steps[].timeoutSeconds")
    assert (timeout["minimum"], timeout["exclusiveMinimum"]) == (0, True)
    assert at(schema, "spec.placement")["default"] == "locality"


def test_cloud_region_defaults() -> None:
    spec = at(schema_of("CloudRegion"), "spec")
    assert spec["required"] == ["provider"]
    assert spec["properties"]["provider"]["enum"] == ["aws", "gcp", "azure", "other"]
    assert spec["properties"]["jitterMs"]["default"] == 5
    workers = spec["properties"]["workers"]
    assert workers["default"] == {}, "so that replicas and slots get their defaults"
    assert workers["properties"]["replicas"]["default"] == 1
    assert workers["properties"]["slots"]["default"] == 4
    assert spec["properties"]["latencyMs"]["additionalProperties"]["type"] == "number"


def test_generation_is_deterministic() -> None:
    assert crds.files() == crds.files()


def test_committed_files_match_a_fresh_build() -> None:
    assert crds.stale(ROOT) == [], "run `make crds`"


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    crds.write(tmp_path)
    (tmp_path / "crds" / "pipeorch.dev_tasks.yaml").write_text("edited by hand\n")
    (tmp_path / "crds" / "pipeorch.dev_olds.yaml").write_text("left over\n")
    problems = crds.stale(tmp_path)
    assert len(problems) == 2
    assert "crds/pipeorch.dev_olds.yaml: not generated any more" in problems[0]
    assert problems[1].startswith("--- crds/pipeorch.dev_tasks.yaml")
    assert crds.main(["--root", str(tmp_path), "--check"]) == 1
    assert crds.main(["--root", str(tmp_path)]) == 0
    assert crds.stale(tmp_path) == []


class _Union(BaseModel):
    value: int | str = Field(description="two types: no structural form")


def test_a_field_without_structural_form_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput) as e:
        structural(_Union)
    assert e.value.field == "value"


def test_an_overlay_on_a_missing_field_fails_the_build() -> None:
    with pytest.raises(InvalidInput) as e:
        at(schema_of("Pipeline"), "spec.steps[].colour")
    assert e.value.field == "spec.steps[].colour"
