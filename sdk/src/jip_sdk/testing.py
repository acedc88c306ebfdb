"""Helpers for operator tests: run an operator as its runner would, validate its DICOM.

Operator tests run ``main.py`` in a subprocess with only the contract's variables set,
because that is the only way an operator is ever started; importing its functions would
test something no runner does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jip_sdk.contract import INPUT_DIR_VAR, OUTPUT_DIR_VAR, PARAMS_VAR


def run_operator_main(
    main_py: Path,
    *,
    input_dir: Path,
    output_dir: Path,
    params: Mapping[str, Any] | str | None = None,
    timeout_s: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python main.py`` with the ``JIP_*`` variables set, as the subprocess runner does.

    ``params`` may be a string to test what an operator does with malformed JSON.
    """
    env = dict(os.environ)
    env[INPUT_DIR_VAR] = str(input_dir)
    env[OUTPUT_DIR_VAR] = str(output_dir)
    if params is None:
        env.pop(PARAMS_VAR, None)
    else:
        env[PARAMS_VAR] = params if isinstance(params, str) else json.dumps(params)
    return subprocess.run(
        [sys.executable, str(main_py)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def dciodvfy_path() -> str:
    """The dicom3tools validator, from PATH or next to the running interpreter."""
    found = shutil.which("dciodvfy") or shutil.which(
        "dciodvfy", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise FileNotFoundError("dciodvfy (dicom3tools) is not installed")
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy reports for one file (warnings are not errors)."""
    result = subprocess.run(
        [dciodvfy_path(), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.lstrip().startswith("Error")]
