"""`jip operator new NAME`: a new operator folder that works and passes its test at once.

The scaffold follows the operator contract and the layout of ``operators/<name>/``:
``main.py`` (reads every input series with the operator SDK ``jip_sdk``, writes
``summary.json`` per series, reports progress), ``params.schema.json``, a ``Dockerfile``
built from the repository root on the operator SDK base image (``jip/operator-sdk``,
which `make images` builds first: the SDK alone, never the platform, and the operator
user), so the new image is a few kilobytes of its own, a ``README.md`` and
``tests/test_<name>.py``, which runs ``main.py`` as a runner does on the SDK's synthetic
CT phantom.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from jip.errors import Conflict
from jip.flow.worker.runner import check_operator_name

_MAIN = '''"""{name}: what it does, in one line (replace this).

Reads every series in JIP_INPUT_DIR/<SeriesInstanceUID>/, writes
JIP_OUTPUT_DIR/<SeriesInstanceUID>/summary.json. Replace ``process_series`` with the
real work; keep reading input and writing output the SDK's way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from jip_sdk import (
    InputSeries,
    OperatorContext,
    iter_series,
    read_datasets,
    report_progress,
    run_operator,
)

logger = logging.getLogger("{name}")

VERSION = "0.1.0"


def process_series(context: OperatorContext, series: InputSeries) -> None:
    datasets = read_datasets(series, stop_before_pixels=True)
    summary = {{
        "series_instance_uid": series.uid,
        "instances": len(datasets),
        "modality": str(datasets[0].get("Modality", "")),
        "label": context.params["label"],
    }}
    out = context.output_dir_for(series.uid) / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\\n", encoding="utf-8")
    logger.info("series %s: %d instances", series.uid, len(datasets))


def process(context: OperatorContext) -> None:
    all_series = iter_series(context.input_dir)
    for index, series in enumerate(all_series):
        process_series(context, series)
        report_progress((index + 1) / len(all_series), series=series.uid, message="done")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
'''

_SCHEMA = """{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "{name} parameters",
  "description": "What the parameters of {name} control (replace this).",
  "type": "object",
  "additionalProperties": false,
  "properties": {{
    "label": {{
      "description": "A text copied into every summary.json.",
      "type": "string",
      "maxLength": 64,
      "default": "{name}"
    }}
  }}
}}
"""

_DOCKERFILE = """# The {name} operator image, on the operator SDK base (deploy/operator-sdk.Dockerfile):
# the SDK in /opt/venv (pydicom, highdicom, SimpleITK, numpy, jsonschema), never the
# platform, and the operator user. `make images` builds it with the others; by hand, from
# the repository root, once `make images` has built jip/operator-sdk:
#   {build}
# A site with a registry can point SDK elsewhere:
#   --build-arg SDK=registry.hospital.local/jip/operator-sdk:{sdk}
# More libraries: operators/rtstruct-to-seg/Dockerfile adds a wheel with a borrowed uv,
# operators/radiomics/Dockerfile compiles one in a build stage; none stays in the image.
ARG SDK=localhost/jip/operator-sdk:{sdk}
FROM ${{SDK}}
COPY operators/{name}/main.py operators/{name}/params.schema.json ./
# Runners set JIP_INPUT_DIR, JIP_OUTPUT_DIR and JIP_PARAMS and never run it as root.
USER 10001:10001
ENTRYPOINT ["/opt/venv/bin/python", "main.py"]
"""

_README = """# {name}

What the operator does (replace this).

| | |
| --- | --- |
| input | `JIP_INPUT_DIR/<SeriesInstanceUID>/*.dcm` |
| output | `JIP_OUTPUT_DIR/<SeriesInstanceUID>/summary.json` |
| params | `params.schema.json`: `label` |
| exit | 0 ok, 1 operator failure, 2 bad parameters or environment, 3 unusable input |

```sh
pytest operators/{name}                                   # its tests
jip operator test {name} --series <SeriesInstanceUID>     # on a series of the local store
make images                                               # every image, this one too
{build}   # alone
```

The image starts `FROM` the operator SDK base (`jip/operator-sdk`, built by `make images`);
a site with a registry passes `--build-arg SDK=<registry>/jip/operator-sdk:{sdk}`.

See docs/operator-developer.md for adding it to a workflow.
"""

_TEST = '''"""{name}, run as a subprocess exactly as the subprocess runner starts it."""

from __future__ import annotations

import json
from pathlib import Path

from jip_sdk import ExitCode
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series
from jip_sdk.testing import run_operator_main

MAIN = Path(__file__).resolve().parents[1] / "main.py"


def test_writes_a_summary_per_series(tmp_path: Path) -> None:
    ct = write_ct_series(build_abdomen_phantom(shape=(8, 64, 64)), tmp_path / "in")
    result = run_operator_main(
        MAIN, input_dir=tmp_path / "in", output_dir=tmp_path / "out", params={{"label": "x"}}
    )
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / ct.series_instance_uid / "summary.json").read_text())
    assert summary["instances"] == 8
    assert summary["label"] == "x"


def test_unknown_parameter_is_refused(tmp_path: Path) -> None:
    write_ct_series(build_abdomen_phantom(shape=(4, 64, 64)), tmp_path / "in")
    result = run_operator_main(
        MAIN, input_dir=tmp_path / "in", output_dir=tmp_path / "out", params={{"nope": 1}}
    )
    assert result.returncode == ExitCode.BAD_PARAMS
'''


def scaffold_operator(root: Path, name: str) -> list[Path]:
    """Create ``root/<name>/`` with a working operator; refuse an existing folder."""
    check_operator_name(name)
    folder = root / name
    if folder.exists():
        raise Conflict(f"{folder} already exists")
    module = name.replace("-", "_")
    files = {
        folder / "main.py": _MAIN,
        folder / "params.schema.json": _SCHEMA,
        folder / "Dockerfile": _DOCKERFILE,
        folder / "README.md": _README,
        folder / "tests" / f"test_{module}.py": _TEST,
    }
    values = {"name": name, "sdk": sdk_version(), "build": image_build_command(name)}
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return sorted(files)


def image_build_command(name: str) -> str:
    """How to build the operator's image alone, from the repository root, once `make
    images` has built the SDK base (`make images` builds it with the others)."""
    return f"podman build --format docker -f operators/{name}/Dockerfile -t jip/{name}:0.1.0 ."


def sdk_version() -> str:
    """The tag of the SDK base image `make images` builds: the platform's version."""
    return importlib.metadata.version("jip-platform")
