"""`jip fed researcher|workflow|job` through click, against the real hub and a site."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from scipy import stats as scipy_stats
from tests.federation.requester.support import FIELD, GROUP_BY, Network
from tests.federation.site.support import DIGEST, PROJECT

from jip.cli.fed import fed
from jip.federation.site import Policies

VALUES = {
    "PZ/3/v1": [55.25, 61.5, 58.0, 70.125, 49.75, 66.0, 52.5, 63.25, 59.0, 57.5],
    "PZ/3/v2": [40.0, 75.5, 62.25, 48.0, 80.75, 55.0, 67.5, 44.25, 71.0, 58.5],
}


def invoke(*args: str) -> str:
    answer = CliRunner().invoke(fed, list(args), catch_exceptions=False)
    assert answer.exit_code == 0, answer.output
    return answer.stdout


def test_submit_wait_json_prints_the_report(net: Network, tmp_path: Path) -> None:
    home = str(tmp_path / "cli-home")
    hub = net.hub
    init = invoke(
        "researcher", "init", "--home", home, "--hub", hub.url,
        "--token", hub.researcher_token, "--ca", str(hub.hub.paths.ca_cert), "--json",
    )  # fmt: skip
    assert json.loads(init)["public_key"]
    assert stat.S_IMODE((tmp_path / "cli-home").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "cli-home" / "box.key").stat().st_mode) == 0o600
    key = tmp_path / "publisher.key"
    made = json.loads(invoke("workflow", "keygen", "--out", str(key), "--json"))
    signed = json.loads(
        invoke("workflow", "sign", "fed-stats", "--digest", DIGEST, "--key", str(key),
               "--home", home, "--json")
    )  # fmt: skip
    assert signed["public_key"] == made["public_key"] and signed["saved"]
    site = net.add_site("aachen", VALUES)
    Policies(site.engine).trust("cli-publisher", made["public_key"])

    report = json.loads(
        invoke(
            "job", "submit", "--home", home, "--cohort", str(net.cohort_file()),
            "--project", PROJECT, "--k", "1", "--deadline", "30m", "--title", "spread",
            "--output", f"adc:sufficient_stats:{FIELD}:groups=PZ/3/v1,PZ/3/v2",
            "--output", f"spread:levene_round1:{FIELD}:groups=PZ/3/v1,PZ/3/v2",
            "--param", f"group_by={json.dumps(GROUP_BY)}", "--levene", "PZ=PZ/3/v1,PZ/3/v2:mean",
            "--wait", "--poll", "0.05", "--json",
        )
    )  # fmt: skip
    assert report["title"] == "spread" and report["k_reached"]
    assert report["sites_answered"] == ["aachen"]
    pooled = report["outputs"]["adc"]["groups"]["PZ/3/v2"]["pooled"]
    assert math.isclose(pooled["variance"], float(np.var(VALUES["PZ/3/v2"], ddof=1)), rel_tol=1e-9)
    (test,) = report["levene"]
    expected = scipy_stats.levene(*VALUES.values(), center="mean")
    assert math.isclose(test["W"], float(expected.statistic), rel_tol=1e-9)

    listed = json.loads(invoke("job", "list", "--home", home, "--json"))
    assert [j["id"] for j in listed] == [report["job"]]
    status = invoke("job", "status", report["job"], "--home", home)
    assert "aachen  done" in status
    tables = invoke("job", "results", report["job"], "--home", home)
    assert "pooled" in tables and "Levene tests" in tables
