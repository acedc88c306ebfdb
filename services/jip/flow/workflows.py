"""Workflow parameters: each DAG names its operators, JIP fills in their schemas.

A DAG declares one object parameter per operator step, marked
``{"type": "object", "x-jip-operator": "<name>"}``, and reads nothing at parse time.
The flow service replaces the mark with the operator's own ``params.schema.json`` when
it lists workflows, and checks a run's parameters against it before the run starts, so a
typo is a 400 naming the parameter, not a failed task an hour later. Operators check
their parameters again themselves (the contract), whoever started them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from jip.errors import Invalid

OPERATOR_KEY = "x-jip-operator"
# Conf keys JIP sets on every run besides the workflow's parameters.
SERIES_KEY = "series"
STUDIES_KEY = "jip_studies"
# Never set any more (a run's token is kept out of its conf); still refused as a parameter.
TOKEN_KEY = "jip_api_token"
# True when the run has a token of its own, in the engine's store under
# run_token_conn_id(run_id) (an Airflow Connection; its password is the token).
RUN_TOKEN_KEY = "jip_run_token"
RESERVED_KEYS = frozenset({SERIES_KEY, STUDIES_KEY, TOKEN_KEY, RUN_TOKEN_KEY})
RUN_TOKEN_CONN_PREFIX = "jip_run_"


def run_token_conn_id(run_id: str) -> str:
    """The Airflow Connection that holds a run's token."""
    return f"{RUN_TOKEN_CONN_PREFIX}{run_id}"


def operator_schema(operators_dir: Path, name: str) -> dict[str, Any] | None:
    """The operator's parameter schema, or None when its folder has none."""
    path = operators_dir / name / "params.schema.json"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    return copy.deepcopy(_load(path, stamp))


@lru_cache(maxsize=64)
def _load(path: Path, _stamp: int) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def operators_of(params_schema: Mapping[str, Any]) -> dict[str, str]:
    """Parameter name -> operator name, for every operator step of a workflow."""
    found = {}
    for name, prop in (params_schema.get("properties") or {}).items():
        if isinstance(prop, Mapping) and isinstance(prop.get(OPERATOR_KEY), str):
            found[name] = prop[OPERATOR_KEY]
    return found


def resolve_schema(params_schema: Mapping[str, Any], operators_dir: Path) -> dict[str, Any]:
    """The workflow's parameter schema with every operator's full schema filled in."""
    resolved = copy.deepcopy(dict(params_schema))
    properties = resolved.setdefault("properties", {})
    for param, operator in operators_of(params_schema).items():
        schema = operator_schema(operators_dir, operator)
        if schema is None:
            continue
        schema.pop("$schema", None)
        keep = {k: v for k, v in properties[param].items() if k in ("default", OPERATOR_KEY)}
        properties[param] = {**schema, **keep}
    # JIP fills these itself; they are no business of a researcher.
    for key in (STUDIES_KEY, TOKEN_KEY, RUN_TOKEN_KEY):
        properties.pop(key, None)
    if "required" in resolved:
        resolved["required"] = [r for r in resolved["required"] if r not in RESERVED_KEYS]
    return resolved


def check_params(params: Mapping[str, Any], resolved: Mapping[str, Any]) -> None:
    """Refuse unknown parameters and operator parameters their schema rejects, at once."""
    properties = resolved.get("properties") or {}
    problems = [
        f"{name}: unknown parameter (known: {', '.join(sorted(k for k in properties if k != SERIES_KEY)) or 'none'})"
        for name in params
        if name not in properties or name in RESERVED_KEYS
    ]
    for name, value in params.items():
        prop = properties.get(name)
        if not isinstance(prop, Mapping) or name in RESERVED_KEYS:
            continue
        schema = {k: v for k, v in prop.items() if k != OPERATOR_KEY}
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
            path = "/".join([name, *(str(p) for p in error.absolute_path)])
            problems.append(f"{path}: {_message(error, prop)}")
    if problems:
        raise Invalid("workflow parameters rejected: " + "; ".join(problems))


def _message(error: jsonschema.ValidationError, prop: Mapping[str, Any]) -> str:
    secret = {
        k
        for k, v in (prop.get("properties") or {}).items()
        if isinstance(v, Mapping) and v.get("writeOnly")
    }
    if error.absolute_path and error.absolute_path[0] in secret:
        return f"value not shown (secret) fails {error.validator}"
    return error.message
