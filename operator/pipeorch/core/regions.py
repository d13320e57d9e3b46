"""CloudRegion: the regions of a system, their round trips and what runs in each.

One file of CloudRegion documents (the same schema as the Kubernetes resource) is the single
source of truth for both the local mode and Kubernetes. ``parse_regions`` reads a multi-document
YAML file and reports every problem at once, each with its field path (``document[1].spec.
latencyMs.aws``): schema problems found by the models, and problems across documents (duplicate
names, unknown regions, round trips that disagree or are missing, where the object store lives).

The models use only constraints an OpenAPI schema can state (types, patterns, bounds, maps with
string keys), so that a CRD schema can be generated from them; the rules that span documents
live in ``_cross_document_errors``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeorch.core.placement import Topology
from pipeorch.core.spec import (
    InvalidDocument,
    Metadata,
    SpecError,
    dedupe_errors,
    load_yaml_all,
    schema_errors,
    yaml_error,
)

Provider = Literal["aws", "gcp", "azure", "other"]
#: A round trip in milliseconds; 0 is a region's own, never configured.
RoundTripMs = Annotated[float, Field(gt=0, le=60_000)]
Mbps = Annotated[float, Field(gt=0, le=1_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerPool(_Strict):
    """The workers a region runs."""

    replicas: int = Field(1, ge=0, le=1000, description="Workers in this region.")
    slots: int = Field(4, ge=1, le=256, description="Steps each worker runs at once.")
    image: str | None = Field(
        None, min_length=1, description="Worker container image (Kubernetes only)."
    )


class CloudRegionSpec(_Strict):
    provider: Provider = Field(description="The cloud this region simulates.")
    latencyMs: dict[str, RoundTripMs] = Field(
        default_factory=dict,
        description="Round trip in milliseconds to each other region, by name. A pair may be "
        "given on either side or both (then both must agree).",
    )
    jitterMs: float = Field(
        5.0, ge=0, le=10_000, description="Variation of the round trips from this region, ms."
    )
    bandwidthMbps: dict[str, Mbps] = Field(
        default_factory=dict, description="Bandwidth to other regions, Mbit/s, by name."
    )
    # The default shows in the CRD, so a region without `workers` gets one worker there too.
    workers: WorkerPool = Field(default_factory=WorkerPool, json_schema_extra={"default": {}})
    objectStore: bool = Field(
        False, description="The object store (MinIO) lives here; exactly one region has it."
    )

    @model_validator(mode="after")
    def _jitter_below_round_trips(self) -> CloudRegionSpec:
        too_small = sorted(name for name, rtt in self.latencyMs.items() if rtt <= self.jitterMs)
        if too_small:
            raise ValueError(
                f"jitterMs ({self.jitterMs:g}) must be smaller than every round trip in "
                f"latencyMs: not the ones to {too_small}"
            )
        return self


class CloudRegion(_Strict):
    apiVersion: Literal["pipeorch.dev/v1alpha1"]
    kind: Literal["CloudRegion"]
    metadata: Metadata
    spec: CloudRegionSpec
    status: dict[str, Any] | None = Field(None, description="Written by the control plane.")

    @property
    def name(self) -> str:
        return self.metadata.name


class InvalidRegions(InvalidDocument):
    """A regions file with one or more problems."""


@dataclass(frozen=True)
class Regions:
    """A validated set of regions, in file order, with symmetric round trips."""

    regions: tuple[CloudRegion, ...]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.regions]

    def region(self, name: str) -> CloudRegion:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)

    @property
    def store_region(self) -> str:
        return next(r.name for r in self.regions if r.spec.objectStore)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """Each unordered pair of distinct regions once, in file order."""
        return itertools.combinations(self.names, 2)

    def rtt_ms(self, a: str, b: str) -> float:
        """The configured round trip between ``a`` and ``b`` (0 inside a region)."""
        if a == b:
            return 0.0
        given = self.region(a).spec.latencyMs.get(b)
        return given if given is not None else self.region(b).spec.latencyMs[a]

    def jitter_ms(self, a: str, b: str) -> float:
        """A pair's jitter: the larger of the two regions' ``jitterMs`` (0 inside a region)."""
        if a == b:
            return 0.0
        return max(self.region(a).spec.jitterMs, self.region(b).spec.jitterMs)

    def rtt_matrix(self) -> dict[str, dict[str, float]]:
        """``{region: {other: ms}}``, both directions of every pair."""
        return {a: {b: self.rtt_ms(a, b) for b in self.names if b != a} for a in self.names}

    def bandwidth_matrix(self) -> dict[str, dict[str, float]]:
        """``{region: {other: Mbit/s}}`` for the pairs that give one, both directions."""
        out: dict[str, dict[str, float]] = {name: {} for name in self.names}
        for region in self.regions:
            for other, mbps in region.spec.bandwidthMbps.items():
                out[region.name][other] = mbps
                out[other][region.name] = mbps
        return out

    def topology(self) -> Topology:
        return Topology.from_matrix(self.rtt_matrix(), self.bandwidth_matrix())


def parse_regions(text: str | bytes) -> Regions:
    """Parse a multi-document YAML file of CloudRegions; raise InvalidRegions listing every
    problem."""
    try:
        documents = [d for d in load_yaml_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidRegions([yaml_error(e)]) from e
    return validate_regions(documents)


def validate_regions(documents: list[Any]) -> Regions:
    """Validate already-decoded CloudRegion documents (dicts), together."""
    if not documents:
        raise InvalidRegions([SpecError("(file)", "no CloudRegion documents")])
    errors: list[SpecError] = []
    valid: dict[int, CloudRegion] = {}
    for i, document in enumerate(documents):
        where = f"document[{i}]"
        if not isinstance(document, dict):
            errors.append(SpecError(where, "must be a mapping (a CloudRegion object)"))
            continue
        try:
            valid[i] = CloudRegion.model_validate(document)
        except ValidationError as e:
            errors += [_within(where, error) for error in schema_errors(e)]
    errors += _cross_document_errors(documents, valid)
    if errors:
        raise InvalidRegions(dedupe_errors(errors))
    return Regions(tuple(valid[i] for i in range(len(documents))))


def _within(document: str, error: SpecError) -> SpecError:
    path = document if error.path == "(document)" else f"{document}.{error.path}"
    return SpecError(path, error.message)


# ---- rules across documents ----------------------------------------------------------------


def _cross_document_errors(documents: list[Any], valid: dict[int, CloudRegion]) -> list[SpecError]:
    errors, first_at = _duplicate_names(valid)
    # A name is known if any document carries it, even one that failed the schema: its own
    # errors are reported there, not as unknown names everywhere else.
    known = set(first_at) | {name for name in map(_raw_name, documents) if name is not None}
    for map_name in ("latencyMs", "bandwidthMbps"):
        errors += _unknown_keys(valid, map_name, known)
        errors += _disagreements(valid, first_at, map_name)
    errors += _missing_round_trips(valid, first_at)
    if len(valid) == len(documents):
        errors += _store_errors(valid)
    return errors


def _raw_name(document: Any) -> str | None:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _duplicate_names(valid: dict[int, CloudRegion]) -> tuple[list[SpecError], dict[str, int]]:
    errors = []
    first_at: dict[str, int] = {}
    for i, region in valid.items():
        first = first_at.get(region.name)
        if first is not None:
            errors.append(
                SpecError(
                    f"document[{i}].metadata.name",
                    f"duplicate region {region.name!r} (first at document[{first}])",
                )
            )
        else:
            first_at[region.name] = i
    return errors, first_at


def _unknown_keys(valid: dict[int, CloudRegion], map_name: str, known: set[str]) -> list[SpecError]:
    errors = []
    for i, region in valid.items():
        for other in getattr(region.spec, map_name):
            path = f"document[{i}].spec.{map_name}.{other}"
            if other == region.name:
                errors.append(
                    SpecError(path, "a region's own traffic is direct: remove this entry")
                )
            elif other not in known:
                errors.append(SpecError(path, f"unknown region {other!r}"))
    return errors


def _disagreements(
    valid: dict[int, CloudRegion], first_at: dict[str, int], map_name: str
) -> list[SpecError]:
    errors = []
    for i, region in valid.items():
        for other, value in getattr(region.spec, map_name).items():
            j = first_at.get(other)
            if j is None or j >= i:
                continue  # reported once, at the later of the two documents
            back = getattr(valid[j].spec, map_name).get(region.name)
            if back is not None and back != value:
                errors.append(
                    SpecError(
                        f"document[{i}].spec.{map_name}.{other}",
                        f"{value:g} disagrees with {back:g} in "
                        f"document[{j}].spec.{map_name}.{region.name}",
                    )
                )
    return errors


def _missing_round_trips(
    valid: dict[int, CloudRegion], first_at: dict[str, int]
) -> list[SpecError]:
    errors = []
    by_name = {valid[i].name: (i, valid[i]) for i in first_at.values()}
    for a, b in itertools.combinations(by_name, 2):
        (i, region_a), (_, region_b) = by_name[a], by_name[b]
        if b not in region_a.spec.latencyMs and a not in region_b.spec.latencyMs:
            errors.append(
                SpecError(
                    f"document[{i}].spec.latencyMs",
                    f"no round trip to {b!r}: give it here or in {b}'s latencyMs",
                )
            )
    return errors


def _store_errors(valid: dict[int, CloudRegion]) -> list[SpecError]:
    holders = [i for i, region in valid.items() if region.spec.objectStore]
    if not holders:
        return [SpecError("(file)", "no region has objectStore: true (exactly one must)")]
    first = valid[holders[0]].name
    return [
        SpecError(
            f"document[{i}].spec.objectStore",
            f"{valid[i].name!r} also holds the object store (first: {first!r}); exactly one must",
        )
        for i in holders[1:]
    ]
