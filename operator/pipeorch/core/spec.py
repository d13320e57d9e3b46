"""The Pipeline spec: typed models (the one schema source of the CRDs) and strict parsing.

``parse_pipeline`` reports every problem of a document at once, each with the path of the field
it concerns (``spec.steps[2].dependsOn[0]``): schema problems found by the models and graph
problems found by ``pipeorch.core.dag`` (cycles with their path, unknown dependencies, duplicate
steps, inputs from steps that are not upstream, outputs declared twice).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from pipeorch.core import dag
from pipeorch.errors import InvalidInput

API_VERSION = "pipeorch.dev/v1alpha1"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: ``package.module:function``
CALLABLE_REF = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
#: ``step/artifact``
INPUT_REF = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ARTIFACT_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

Name = Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=63)]
ArtifactName = Annotated[str, StringConstraints(pattern=ARTIFACT_NAME, max_length=128)]
InputRef = Annotated[str, StringConstraints(pattern=INPUT_REF, max_length=192)]

Placement = Literal["locality", "spread", "pinned"]


class _Strict(BaseModel):
    # Infinity and NaN (YAML's .inf and .nan in params) are written as JSON's common extension,
    # not as null, so that the spec a replica reads back is the spec submitted.
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, ser_json_inf_nan="constants"
    )


class RetryPolicy(_Strict):
    """How an application failure (exception, non-zero exit, timeout) is retried."""

    limit: int = Field(0, ge=0, le=100, description="Retries after the first attempt.")
    backoffSeconds: float = Field(
        1.0, ge=0, le=3600, description="Wait before the first retry, in seconds."
    )
    backoffFactor: float = Field(
        2.0, ge=1, le=10, description="Each further retry waits this many times longer."
    )

    def delay(self, failures: int) -> float:
        """Seconds to wait before the retry that follows the ``failures``-th failure."""
        return float(self.backoffSeconds * self.backoffFactor ** max(0, failures - 1))


class Step(_Strict):
    """One node of the DAG; becomes one Task."""

    name: Name = Field(description="Unique within the pipeline; a DNS-1123 label.")
    dependsOn: list[Name] = Field(
        default_factory=list, description="Steps that must succeed before this one runs."
    )
    run: Annotated[str, StringConstraints(pattern=CALLABLE_REF)] | None = Field(
        None, description="A Python callable in the worker image, `module:function`."
    )
    command: list[str] | None = Field(
        None,
        min_length=1,
        description="An argv list run in a subprocess; input and output paths reach it "
        "through PIPEORCH_INPUT_<NAME> and PIPEORCH_OUTPUT_<NAME> and PIPEORCH_OUTPUT_DIR.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="A JSON object handed to the step."
    )
    inputs: list[InputRef] = Field(
        default_factory=list, description="Artifacts of upstream steps, as `step/artifact`."
    )
    outputs: list[ArtifactName] = Field(
        default_factory=list, description="Artifacts this step writes."
    )
    region: Name | None = Field(None, description="Run only in this region (a pin).")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeoutSeconds: float = Field(
        3600, gt=0, le=7 * 24 * 3600, description="An attempt running longer fails (timeout)."
    )

    @model_validator(mode="after")
    def _run_xor_command(self) -> Step:
        if (self.run is None) == (self.command is None):
            raise ValueError("exactly one of `run` or `command` must be set")
        return self

    @cached_property
    def params_json(self) -> str:
        """The params as workers receive them (keys sorted); made once per step, not once per
        task handed out."""
        return json.dumps(self.params, sort_keys=True)

    def input_refs(self) -> list[tuple[str, str]]:
        return [tuple(ref.split("/", 1)) for ref in self.inputs]  # type: ignore[misc]


class PipelineSpec(_Strict):
    steps: list[Step] = Field(min_length=1, max_length=10_000)
    maxParallel: int | None = Field(
        None, ge=1, description="At most this many steps of the pipeline run at once."
    )
    placement: Placement = Field(
        "locality",
        description="locality: run where the inputs are cheapest to reach; spread: balance "
        "steps across regions; pinned: every step must name its region.",
    )

    @model_validator(mode="after")
    def _pinned_needs_regions(self) -> PipelineSpec:
        if self.placement == "pinned":
            unpinned = [s.name for s in self.steps if s.region is None]
            if unpinned:
                raise ValueError(f"placement is `pinned` but steps {unpinned} name no region")
        return self

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


class Metadata(BaseModel):
    # Kubernetes adds many fields (uid, resourceVersion, ...); only these are read.
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Name
    namespace: str | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Pipeline(_Strict):
    apiVersion: Literal["pipeorch.dev/v1alpha1"]
    kind: Literal["Pipeline"]
    metadata: Metadata
    spec: PipelineSpec
    status: dict[str, Any] | None = Field(None, description="Written by the control plane.")

    @property
    def name(self) -> str:
        return self.metadata.name


@dataclass(frozen=True)
class SpecError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidDocument(InvalidInput):
    """A document with one or more problems; ``errors`` lists every one of them."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.path, first.message)
        self.args = ("; ".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidPipeline(InvalidDocument):
    """A pipeline document with one or more problems."""


def parse_pipeline(text: str | bytes) -> Pipeline:
    """Parse a YAML or JSON Pipeline document; raise InvalidPipeline listing every problem."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise InvalidPipeline([yaml_error(e)]) from e
    return validate_pipeline(data)


#: libyaml's loader where PyYAML was built with it: the pure-Python one spends about half a
#: second of a replica's CPU on a manifest of a thousand steps, libyaml a tenth of that.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes) -> Any:
    """One YAML (or JSON) document, with the safe constructors only.

    A JSON document (what API clients and the operator send) is read by the json module, ten
    times faster than YAML's object construction; one that does not decode as JSON is read as
    YAML, whose errors name the line and column."""
    if text.lstrip()[:1] in ("{", b"{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return yaml.load(text, Loader=_SafeLoader)  # a safe loader: plain data only


def load_yaml_all(text: str | bytes) -> list[Any]:
    """Every document of a YAML stream, with the safe constructors only."""
    return list(yaml.load_all(text, Loader=_SafeLoader))  # a safe loader: plain data only


def validate_pipeline(data: Any) -> Pipeline:
    """Validate an already-decoded document (a dict)."""
    if not isinstance(data, dict):
        raise InvalidPipeline([SpecError("(document)", "must be a mapping (a Pipeline object)")])
    errors: list[SpecError] = []
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as e:
        errors.extend(schema_errors(e))
    errors.extend(
        graph_errors(data.get("spec", {}).get("steps") if _is_map(data.get("spec")) else None)
    )
    if errors:
        raise InvalidPipeline(dedupe_errors(errors))
    assert pipeline is not None
    return pipeline


def spec_json(pipeline: Pipeline) -> str:
    """JSON of a pipeline's spec (fields in the schema's order), as the replicated state keeps
    it. Written by pydantic's serializer: a fifth of the time of a dump to dicts and json.dumps,
    for a spec of a thousand steps."""
    text = pipeline.spec.model_dump_json(exclude_none=True)
    _remember(text, pipeline.spec)
    return text


def load_spec(text: str) -> PipelineSpec:
    """The spec that ``spec_json`` wrote ``text`` from, validated again unless this process
    validated it a moment ago: a replica that parsed a submission (the leader) applies it
    without validating a thousand steps a second time. Specs are frozen, so one may be shared."""
    spec = _validated.get(text)
    if spec is None:
        # Parsed and validated in one pass of pydantic's core: half the time of json.loads and
        # validating the dicts.
        return PipelineSpec.model_validate_json(text)
    return spec


#: The specs ``spec_json`` wrote last, by their JSON (a memo of ``load_spec``, which validating
#: ``text`` again would return equal).
_validated: OrderedDict[str, PipelineSpec] = OrderedDict()
_VALIDATED_KEPT = 16


def _remember(text: str, spec: PipelineSpec) -> None:
    _validated[text] = spec
    _validated.move_to_end(text)
    while len(_validated) > _VALIDATED_KEPT:
        _validated.popitem(last=False)


# ---- errors --------------------------------------------------------------------------------


def yaml_error(error: yaml.YAMLError) -> SpecError:
    """Where a YAML document fails to parse, and why."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
    problem = getattr(error, "problem", None) or str(error)
    return SpecError(where, f"invalid YAML: {problem}")


def schema_errors(error: ValidationError) -> list[SpecError]:
    out = []
    for item in error.errors():
        path = _path(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "string_pattern_mismatch" and _is_name_field(item["loc"]):
            message = f"{item['input']!r} is not a DNS-1123 label (lowercase letters, digits, '-')"
        elif kind == "value_error":
            message = str(item["msg"]).removeprefix("Value error, ")
        else:
            message = item["msg"]
        out.append(SpecError(path or "(document)", message))
    return out


def _is_name_field(loc: tuple[Any, ...]) -> bool:
    return any(part in ("name", "dependsOn", "region") for part in loc if isinstance(part, str))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def dedupe_errors(errors: list[SpecError]) -> list[SpecError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.path, e.message) not in seen:
            seen.add((e.path, e.message))
            out.append(e)
    return out


def _is_map(value: Any) -> bool:
    return isinstance(value, dict)


def graph_errors(raw_steps: Any) -> list[SpecError]:
    """Problems of the step graph, found on the raw document so that they are reported even
    when some fields fail the schema. Malformed entries are skipped (the schema names them)."""
    if not isinstance(raw_steps, list):
        return []
    steps = [s for s in raw_steps if isinstance(s, dict) and isinstance(s.get("name"), str)]
    positions: dict[str, int] = {}
    errors: list[SpecError] = []
    for i, step in enumerate(raw_steps):
        if not (isinstance(step, dict) and isinstance(step.get("name"), str)):
            continue
        name = step["name"]
        if name in positions:
            errors.append(
                SpecError(
                    f"spec.steps[{i}].name",
                    f"duplicate step {name!r} (first at [{positions[name]}])",
                )
            )
        else:
            positions[name] = i
    edges: dict[str, list[str]] = {}
    for step in steps:
        deps = step.get("dependsOn") or []
        edges.setdefault(step["name"], [])
        if isinstance(deps, list):
            edges[step["name"]] += [d for d in deps if isinstance(d, str)]
    for i, step in enumerate(raw_steps):
        if not (isinstance(step, dict) and isinstance(step.get("name"), str)):
            continue
        deps = step.get("dependsOn") or []
        for j, dep in enumerate(deps if isinstance(deps, list) else []):
            if isinstance(dep, str) and dep not in positions:
                errors.append(SpecError(f"spec.steps[{i}].dependsOn[{j}]", f"unknown step {dep!r}"))
            elif dep == step["name"]:
                errors.append(
                    SpecError(f"spec.steps[{i}].dependsOn[{j}]", "a step cannot depend on itself")
                )
    cycle = dag.find_cycle(
        {n: [d for d in ds if d in positions and d != n] for n, ds in edges.items()}
    )
    if cycle:
        errors.append(
            SpecError(
                f"spec.steps[{positions[cycle[0]]}].dependsOn", "cycle: " + " -> ".join(cycle)
            )
        )
    errors += _artifact_errors(raw_steps, positions, edges, acyclic=not cycle)
    return errors


def _artifact_errors(
    raw_steps: list[Any], positions: dict[str, int], edges: dict[str, list[str]], acyclic: bool
) -> list[SpecError]:
    errors = []
    produced: dict[str, set[str]] = {}
    for i, step in enumerate(raw_steps):
        if not (isinstance(step, dict) and isinstance(step.get("name"), str)):
            continue
        seen: set[str] = set()
        outputs = step.get("outputs") or []
        for j, out in enumerate(outputs if isinstance(outputs, list) else []):
            if out in seen:
                errors.append(
                    SpecError(f"spec.steps[{i}].outputs[{j}]", f"output {out!r} declared twice")
                )
            seen.add(out)
        produced.setdefault(step["name"], set()).update(o for o in seen if isinstance(o, str))
    for i, step in enumerate(raw_steps):
        if not (isinstance(step, dict) and isinstance(step.get("name"), str)):
            continue
        inputs = step.get("inputs") or []
        # Only steps with inputs need their ancestors: walking them for every step of a long
        # chain would cost time quadratic in its length.
        upstream = dag.ancestors(edges, step["name"]) if acyclic and inputs else set()
        for j, ref in enumerate(inputs if isinstance(inputs, list) else []):
            if not isinstance(ref, str) or "/" not in ref:
                continue  # the schema reports the malformed reference
            source, artifact = ref.split("/", 1)
            path = f"spec.steps[{i}].inputs[{j}]"
            if source not in positions:
                errors.append(SpecError(path, f"unknown step {source!r}"))
            elif acyclic and source not in upstream:
                errors.append(
                    SpecError(
                        path,
                        f"step {source!r} is not upstream of {step['name']!r} "
                        "(add it to dependsOn)",
                    )
                )
            elif artifact not in produced.get(source, set()):
                errors.append(SpecError(path, f"step {source!r} declares no output {artifact!r}"))
    return errors
