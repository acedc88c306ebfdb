"""checkov --framework kubernetes finds nothing in what the chart renders beyond the short,
justified list in charts/jip/ci/checkov-skips.yaml, and that list holds nothing stale.

Checkov pins older boto3, packaging and networkx than JIP's environment, so it lives in
its own virtual environment: `make checkov-venv` (build/checkov-venv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.charts.support import CHART, example, render

ROOT = CHART.parents[1]
SKIPS: list[dict[str, Any]] = yaml.safe_load((CHART / "ci" / "checkov-skips.yaml").read_text())


def checkov_binary() -> str:
    for candidate in (os.environ.get("JIP_CHECKOV"), str(ROOT / "build/checkov-venv/bin/checkov")):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("checkov")
    if found is None:
        pytest.skip("checkov is not installed: run `make checkov-venv`")
    return found


def failures(rendered: Path) -> list[tuple[str, str]]:
    """(check id, Kind/name) of every failed check on the manifests in ``rendered``."""
    result = subprocess.run(
        [
            checkov_binary(),
            "-d",
            str(rendered),
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "--quiet",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    found = []
    for one in reports:
        for check in one["results"]["failed_checks"]:
            kind, _namespace, name = check["resource"].split(".", 2)
            found.append((check["check_id"], f"{kind}/{name}"))
    return found


def skipped(check: str, resource: str) -> bool:
    return any(
        s["id"] == check and ("resources" not in s or resource in s["resources"]) for s in SKIPS
    )


@pytest.mark.parametrize("name", ["minimal", "production"])
def test_checkov_finds_nothing_beyond_the_justified_skips(
    chart: Any, name: str, tmp_path: Path
) -> None:
    checkov_binary()
    (tmp_path / "site.yaml").write_text(yaml.safe_dump_all(render(chart, example(name))))
    found = failures(tmp_path)
    unexpected = sorted({f for f in found if not skipped(*f)})
    assert unexpected == [], unexpected
    if name == "minimal":  # every entry still names something the chart does
        stale = [s["id"] for s in SKIPS if not any(f[0] == s["id"] for f in found)]
        assert stale == []


def test_every_skip_says_why() -> None:
    assert 0 < len(SKIPS) <= 8
    for skip in SKIPS:
        assert skip["id"].startswith("CKV")
        assert len(skip["why"].split()) >= 12, skip["id"]
