"""Pydantic JSON schema -> Kubernetes structural OpenAPI v3 schema. Pure: no I/O.

The API server accepts only *structural* schemas in a CRD: every node has a type (or says
``x-kubernetes-preserve-unknown-fields``), there are no ``$ref``s, ``anyOf`` may not carry types,
``additionalProperties`` may not sit next to ``properties``, and ``uniqueItems`` is refused.
Pydantic emits JSON Schema 2020-12 with ``$defs``, ``anyOf [X, null]`` for optional fields and
numeric ``exclusiveMinimum``; this module rewrites that into what the API server takes, and
refuses (naming the field) anything it cannot express rather than silently weakening it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pipeorch.errors import InvalidInput

Schema = dict[str, Any]

#: Keywords copied as they are, in this order (the order of the generated YAML).
_SCALAR_KEYWORDS = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)
#: Keywords that carry no validation for the API server.
_DROPPED = frozenset({"title", "$defs", "examples"})
#: Keywords that constrain nothing (an `Any` field may carry them).
_ANNOTATIONS = ("description", "default")
_NULL = {"type": "null"}


def structural(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``'s validation JSON schema."""
    raw = model.model_json_schema(mode="validation")
    defs = raw.get("$defs", {})
    return convert(raw, defs)


def convert(node: Schema, defs: dict[str, Schema], path: str = "") -> Schema:
    node = _resolve(node, defs, path)
    if not set(node) - _DROPPED - set(_ANNOTATIONS):
        # `Any`: the one case where a node may have no type.
        out: Schema = {}
        for key in _ANNOTATIONS:
            if key in node:
                _copy(out, key, node[key])
        return {**out, "x-kubernetes-preserve-unknown-fields": True}
    out = {}
    for key in _SCALAR_KEYWORDS:
        if key in node:
            _copy(out, key, node[key])
    if "const" in node:
        out["enum"] = [node["const"]]
    if "properties" in node:
        out["properties"] = {
            name: convert(sub, defs, f"{path}.{name}" if path else name)
            for name, sub in node["properties"].items()
        }
    if node.get("required"):
        out["required"] = list(node["required"])
    if "items" in node:
        out["items"] = convert(node["items"], defs, f"{path}[]")
    if node.get("uniqueItems"):
        # Refused by the API server (quadratic); a set-typed list says the same in linear time.
        out["x-kubernetes-list-type"] = "set"
    _additional(out, node.get("additionalProperties"), defs, path)
    unknown = set(node) - set(_SCALAR_KEYWORDS) - _DROPPED - _STRUCTURE
    if unknown:
        raise InvalidInput(path or "(root)", f"no structural-schema form for {sorted(unknown)}")
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        raise InvalidInput(path or "(root)", "a structural schema needs a type here")
    return out


_STRUCTURE = frozenset(
    {"const", "properties", "required", "items", "uniqueItems", "additionalProperties"}
)


def _copy(out: Schema, key: str, value: Any) -> None:
    if key == "default" and value is None:
        return  # `None` means "absent"; the API server prunes nulls of non-nullable fields
    if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
        # JSON Schema 2020-12 gives the bound; OpenAPI v3.0 a flag next to minimum/maximum.
        out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
        value = True
    out[key] = value


def _additional(out: Schema, value: Any, defs: dict[str, Schema], path: str) -> None:
    if value is None or value is False:
        # `extra="forbid"`: the API server already prunes unknown fields, and rejects them
        # under strict field validation (kubectl's default); `false` itself is refused.
        return
    if value is True or value == {}:
        out["x-kubernetes-preserve-unknown-fields"] = True
    else:
        out["additionalProperties"] = convert(value, defs, f"{path}{{}}")


def _resolve(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Inline ``$ref`` and collapse ``anyOf``/``allOf`` of one variant (optional fields are
    ``anyOf [X, null]``). The referring node's own keys (its description, its default) win."""
    while True:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in defs:
                raise InvalidInput(path or "(root)", f"unresolved reference {node['$ref']}")
            node = {**defs[name], **_without(node, "$ref")}
        elif "anyOf" in node or "allOf" in node:
            key = "anyOf" if "anyOf" in node else "allOf"
            variants = [v for v in node[key] if v != _NULL]
            if len(variants) != 1:
                raise InvalidInput(
                    path or "(root)", f"{key} of {len(variants)} schemas has no structural form"
                )
            node = {**variants[0], **_without(node, key)}
        else:
            return node


def _without(node: Schema, key: str) -> Schema:
    return {k: v for k, v in node.items() if k != key}


def at(schema: Schema, path: str) -> Schema:
    """The sub-schema at ``path``: ``steps[].outputs`` is ``properties.steps.items.properties
    .outputs``; ``""`` is the schema itself. Raises InvalidInput naming a missing path, so an
    overlay written for a field that was renamed fails the build instead of vanishing."""
    node = schema
    for part in filter(None, path.split(".")):
        name, many = (part[:-2], True) if part.endswith("[]") else (part, False)
        if name not in node.get("properties", {}):
            raise InvalidInput(path, f"no field {name!r} in the schema")
        node = node["properties"][name]
        if many:
            if "items" not in node:
                raise InvalidInput(path, f"{name!r} is not a list")
            node = node["items"]
    return node
