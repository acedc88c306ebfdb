"""The operator contract, read from the environment in one place.

An operator reads ``JIP_INPUT_DIR/<SeriesInstanceUID>/*.dcm``, writes into
``JIP_OUTPUT_DIR/<SeriesInstanceUID>/`` and takes its parameters as JSON in
``JIP_PARAMS`` (see DESIGN.md, "Operator contract"). The runner (subprocess, container,
Kubernetes pod) only sets these variables, so this module is the whole interface between
a runner and an operator. Parameters are checked against the operator's
``params.schema.json`` before any work starts, so a typo fails in a second with a message
naming the parameter, not after an hour of processing.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from jip_sdk.errors import Invalid

INPUT_DIR_VAR = "JIP_INPUT_DIR"
OUTPUT_DIR_VAR = "JIP_OUTPUT_DIR"
PARAMS_VAR = "JIP_PARAMS"


class ContractError(Invalid):
    """The runner broke the contract: a variable is missing or names a bad directory."""


class ParamsError(Invalid):
    """``JIP_PARAMS`` is not JSON or does not match the operator's parameter schema."""


@dataclass(frozen=True)
class OperatorContext:
    """What an operator gets from its runner: where to read, where to write, how."""

    input_dir: Path
    output_dir: Path
    params: Mapping[str, Any]
    # Names of parameters the schema marks ``writeOnly`` (salts, tokens): never logged.
    secret_params: frozenset[str] = field(default_factory=frozenset)

    def output_dir_for(self, series_uid: str) -> Path:
        """The (created) output folder for results derived from one series."""
        path = self.output_dir / series_uid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def loggable_params(self) -> dict[str, Any]:
        """The parameters with secrets masked, safe to write to a log."""
        return {k: ("***" if k in self.secret_params else v) for k, v in self.params.items()}


def load_schema(schema_path: Path) -> dict[str, Any]:
    """Read and check a ``params.schema.json`` (a broken schema is the author's bug)."""
    schema: dict[str, Any] = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate_params(raw: str | None, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Parse ``JIP_PARAMS``, fill top-level defaults from the schema and validate.

    All violations are reported at once, each with the path of the parameter at fault,
    so a researcher fixes a run configuration in one go.
    """
    text = (raw or "").strip()
    try:
        params = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ParamsError(f"{PARAMS_VAR} is not valid JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{PARAMS_VAR} must be a JSON object, got {type(params).__name__}")
    # JSON Schema validators never fill defaults; do it for top-level properties so an
    # operator sees every documented parameter with its effective value.
    for name, prop in schema.get("properties", {}).items():
        if name not in params and isinstance(prop, Mapping) and "default" in prop:
            params[name] = copy.deepcopy(prop["default"])
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        secrets = secret_param_names(schema)
        problems = "; ".join(_describe_error(e, secrets) for e in errors)
        raise ParamsError(f"{PARAMS_VAR} does not match params.schema.json: {problems}")
    return params


def _describe_error(error: jsonschema.ValidationError, secrets: frozenset[str]) -> str:
    path = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.absolute_path and error.absolute_path[0] in secrets:
        # jsonschema quotes the offending value; a secret must not reach the log.
        return f"{path}: value not shown (secret) fails {error.validator}={error.validator_value}"
    return f"{path}: {error.message}"


def secret_param_names(schema: Mapping[str, Any]) -> frozenset[str]:
    """Top-level parameters the schema marks ``writeOnly``: values that must not be logged."""
    props = schema.get("properties", {})
    return frozenset(
        name for name, prop in props.items() if isinstance(prop, Mapping) and prop.get("writeOnly")
    )


def read_context(schema_path: Path, *, environ: Mapping[str, str] | None = None) -> OperatorContext:
    """Build the context from the environment (or from ``environ`` in tests)."""
    env = os.environ if environ is None else environ
    input_dir = _required_dir(env, INPUT_DIR_VAR)
    if not input_dir.is_dir():
        raise ContractError(f"{INPUT_DIR_VAR}={input_dir} is not a directory")
    output_dir = _required_dir(env, OUTPUT_DIR_VAR)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ContractError(f"{OUTPUT_DIR_VAR}={output_dir} cannot be created: {exc}") from exc
    schema = load_schema(schema_path)
    params = validate_params(env.get(PARAMS_VAR), schema)
    return OperatorContext(
        input_dir=input_dir,
        output_dir=output_dir,
        params=params,
        secret_params=secret_param_names(schema),
    )


def _required_dir(env: Mapping[str, str], name: str) -> Path:
    value = env.get(name, "").strip()
    if not value:
        raise ContractError(f"{name} is not set; the runner must set it (see operator contract)")
    return Path(value)
