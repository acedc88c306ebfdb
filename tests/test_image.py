"""The platform image keeps what the flow API checks runs against (the image is not built here)."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "deploy" / "Dockerfile"


def _final_stage() -> str:
    text = DOCKERFILE.read_text()
    return text[text.rindex("\nFROM ") :]


def test_the_image_ships_the_operator_schemas_where_settings_point() -> None:
    stage = _final_stage()
    configured = re.search(r"JIP_FLOW__OPERATORS_DIR=(\S+)", stage)
    assert configured, "the image must set flow.operators_dir (its source tree is removed)"
    copied = re.search(r"^COPY operators (\S+)$", stage, flags=re.MULTILINE)
    assert copied and copied.group(1) == configured.group(1)
    schemas = Path(configured.group(1))
    deleted = [Path(path) for path in re.findall(r"rm -rf (\S+)", stage)]
    assert not [path for path in deleted if path == schemas or path in schemas.parents]
