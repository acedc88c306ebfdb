"""A workflow's parameter form, generated from its JSON Schema, and back to ``params``.

The schema has one object per operator (``x-jip-operator``); each of its scalar
properties becomes a field named ``<operator>.<property>``. An operator object without
declared properties gets a JSON text field named ``<operator>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jip.errors import Invalid

SCALARS = {"string", "integer", "number", "boolean"}


@dataclass(frozen=True)
class Field:
    name: str  # form field name
    label: str
    kind: str  # string, integer, number, boolean, enum, json
    default: Any = None
    choices: tuple[Any, ...] = ()
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operator:
    name: str
    title: str
    fields: tuple[Field, ...]


def operators(schema: Mapping[str, Any]) -> list[Operator]:
    result = []
    for op_name, spec in (schema.get("properties") or {}).items():
        if not isinstance(spec, Mapping) or spec.get("type") != "object":
            continue
        props = spec.get("properties") or {}
        required = set(spec.get("required") or [])
        fields = []
        for prop, prop_spec in props.items():
            fields.append(_field(f"{op_name}.{prop}", prop, prop_spec, prop in required))
        if not props:
            default = json.dumps(spec.get("default") or {})
            fields.append(Field(op_name, "parameters (JSON)", "json", default))
        result.append(Operator(op_name, str(spec.get("title") or op_name), tuple(fields)))
    return result


def _field(name: str, prop: str, spec: Mapping[str, Any], required: bool) -> Field:
    kind = _kind(spec.get("type"))
    if "enum" in spec:
        return Field(
            name,
            prop,
            "enum",
            spec.get("default"),
            tuple(spec["enum"]),
            str(spec.get("description", "")),
            required,
        )
    default = spec.get("default")
    if kind == "json" and default is not None:
        default = json.dumps(default)
    return Field(
        name,
        str(spec.get("title") or prop),
        str(kind),
        default,
        description=str(spec.get("description", "")),
        required=required,
    )


def _kind(declared: Any) -> str:
    """A nullable type (``["string", "null"]``) is its other type: an empty field already
    means "not set". Anything but one scalar type is edited as JSON."""
    if isinstance(declared, list):
        types = [t for t in declared if t != "null"]
        declared = types[0] if len(types) == 1 else None
    return declared if declared in SCALARS else "json"


def params(schema: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The run's ``params`` from the submitted form (empty fields are left out)."""
    result: dict[str, Any] = {}
    for operator in operators(schema):
        values: dict[str, Any] = {}
        for field in operator.fields:
            raw = form.get(field.name, "")
            if field.kind == "boolean":
                values[field.name.split(".", 1)[1]] = raw in ("on", "true", "1")
                continue
            if raw == "":
                continue
            value = _convert(field, raw)
            if field.name == operator.name:  # a JSON object for the whole operator
                if not isinstance(value, dict):
                    raise Invalid(f"{field.name}: expected a JSON object")
                values.update(value)
            else:
                values[field.name.split(".", 1)[1]] = value
        if values:
            result[operator.name] = values
    return result


def _convert(field: Field, raw: str) -> Any:
    try:
        if field.kind == "integer":
            return int(raw)
        if field.kind == "number":
            return float(raw)
        if field.kind == "json":
            return json.loads(raw)
    except ValueError as exc:
        raise Invalid(f"{field.name}: {exc}") from None
    if field.kind == "enum":
        for choice in field.choices:
            if str(choice) == raw:
                return choice
        raise Invalid(f"{field.name}: {raw!r} is not one of {list(field.choices)}")
    return raw
