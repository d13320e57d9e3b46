"""JSON schema -> structural schema, one rewrite at a time."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from pipeorch.errors import InvalidInput
from pipeorch.k8s.schema import at, convert, structural


class Inner(BaseModel):
    """The inner model."""

    n: int = Field(3, ge=0)


class Sample(BaseModel):
    anything: Any = Field(None, description="Whatever the user wrote.")
    mapping: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    tags: set[str] = Field(default_factory=set)
    kind: Literal["one"] = "one"
    ratio: float = Field(0.5, gt=0, lt=1)
    inner: Inner | None = Field(None, description="Says the field, not the model.")
    items: list[Inner] = Field(default_factory=list)


SCHEMA = structural(Sample)


def prop(name: str) -> dict[str, Any]:
    node: dict[str, Any] = SCHEMA["properties"][name]
    return node


def test_any_keeps_unknown_fields_without_a_type() -> None:
    assert prop("anything") == {
        "description": "Whatever the user wrote.",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_a_free_form_object_keeps_unknown_fields() -> None:
    assert prop("mapping") == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_a_typed_map_keeps_its_value_schema() -> None:
    assert prop("counts") == {"type": "object", "additionalProperties": {"type": "integer"}}


def test_unique_items_become_a_set_list() -> None:
    tags = prop("tags")
    assert "uniqueItems" not in tags
    assert tags["x-kubernetes-list-type"] == "set"


def test_a_single_literal_is_an_enum() -> None:
    assert prop("kind") == {"type": "string", "enum": ["one"], "default": "one"}


def test_exclusive_bounds_are_openapi_v3_flags() -> None:
    ratio = prop("ratio")
    assert (ratio["minimum"], ratio["exclusiveMinimum"]) == (0, True)
    assert (ratio["maximum"], ratio["exclusiveMaximum"]) == (1, True)


def test_an_optional_reference_is_inlined_with_the_fields_own_description() -> None:
    inner = prop("inner")
    assert inner["description"] == "Says the field, not the model."
    assert inner["type"] == "object"
    assert inner["properties"]["n"] == {"type": "integer", "default": 3, "minimum": 0}
    assert "default" not in inner, "a None default is absence, not null"


def test_a_list_of_references_is_inlined_with_the_models_description() -> None:
    assert prop("items")["items"]["description"] == "The inner model."


def test_no_titles_refs_or_defs_remain() -> None:
    text = repr(SCHEMA)
    for word in ("'title'", "$ref", "$defs", "anyOf"):
        assert word not in text


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        ({"$ref": "#/$defs/Missing"}, "unresolved reference"),
        ({"oneOf": [{"type": "string"}]}, "no structural-schema form"),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "anyOf of 2 schemas"),
        ({"enum": [1, "a"]}, "needs a type"),
    ],
)
def test_what_has_no_structural_form_is_refused(node: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput) as e:
        convert({"type": "object", "properties": {"f": node}}, defs={})
    assert e.value.field == "f"
    assert problem in e.value.problem


def test_at_walks_properties_and_items() -> None:
    assert at(SCHEMA, "items[].n")["type"] == "integer"
    assert at(SCHEMA, "") is SCHEMA
    with pytest.raises(InvalidInput):
        at(SCHEMA, "kind[]")
