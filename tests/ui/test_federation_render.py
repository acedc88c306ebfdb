"""The federated study's report as HTML and SVG (jip/ui/federation_report.py), from a
hand-made report of the shape ``jip.federation.requester.job_report`` returns."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from jip.ui.federation_report import (
    histogram_svg,
    levene_table,
    means_svg,
    number,
    report_html,
    stats_table,
)

EDGES = [0.0, 40.0, 60.0, 120.0]


def report() -> dict[str, Any]:
    return {
        "job": "ab" * 16,
        "title": "ADC before and after",
        "workflow": "fed-stats",
        "k": 2,
        "deadline": "2030-01-01T00:00:00+00:00",
        "state": {
            "site-a": {"state": "done", "reason": None},
            "site-b": {"state": "done", "reason": None},
            "site-c": {"state": "refused", "reason": "project prostate: does not take part"},
        },
        "sites_answered": ["site-a", "site-b"],
        "sites_missing": [
            {"site": "site-c", "state": "refused", "reason": "project prostate: does not take part"}
        ],
        "k_reached": True,
        "outputs": {
            "adc": {
                "kind": "sufficient_stats",
                "field": "adc",
                "groups": {
                    "PZ/3/v1": {
                        "sites": {
                            "site-a": {"n": 10, "mean": 1.5, "variance": 0.04, "min": 1.1, "max": 1.9},
                            "site-b": {"n": 1, "mean": 2.0, "variance": None, "min": 2.0, "max": 2.0},
                        },
                        "pooled": {"n": 11, "mean": 1.5454545, "variance": 0.0627, "min": 1.1, "max": 2.0},
                    },
                },
            },
            "age": {
                "kind": "histogram",
                "field": "PatientAgeYears",
                "groups": {
                    "all": {
                        "sites": {
                            "site-a": {"n": 20, "edges": EDGES, "counts": [5, 10, 5], "below": 0, "above": 0},
                            "site-b": {"n": 8, "edges": EDGES, "counts": [0, 2, 6], "below": 0, "above": 0},
                        },
                        "pooled": {
                            "n": 28,
                            "edges": EDGES,
                            "counts": [5, 12, 11],
                            "below": 0,
                            "above": 0,
                            "quantiles": {
                                "0.5": {"estimate": 55.0, "lower": 40.0, "upper": 60.0, "approximate": True}
                            },
                        },
                    }
                },
            },
            "n": {
                "kind": "count",
                "field": "PatientAgeYears",
                "groups": {"all": {"sites": {"site-a": {"n": 20}, "site-b": {"n": 8}}, "pooled": {"n": 28}}},
            },
        },
        "levene": [
            {
                "name": "PZ_3T",
                "groups": ["PZ/3/v1", "PZ/3/v2"],
                "center": "median",
                "W": 3.21,
                "p": 0.0789,
                "df": [1, 38],
                "n": {"PZ/3/v1": 20, "PZ/3/v2": 20},
                "sites": ["site-a", "site-b"],
                "error": None,
            },
            {
                "name": "later",
                "groups": ["a", "b"],
                "center": "mean",
                "W": None,
                "p": None,
                "df": None,
                "n": None,
                "sites": [],
                "error": "pending",
            },
        ],
    }  # fmt: skip


def parsed(markup: str) -> ET.Element:
    """The markup as XML: it must be well formed (every tag closed, every value escaped)."""
    return ET.fromstring(f"<div>{markup}</div>")


def rows(table: ET.Element) -> dict[str, list[str]]:
    found = {}
    for row in table.iter("tr"):
        if row.get("data-site"):
            found[row.get("data-site", "")] = ["".join(cell.itertext()) for cell in row][1:]
    return found


def test_the_report_names_every_site_with_its_state_and_why_one_is_missing() -> None:
    page = parsed(report_html(report()))
    (sites,) = [t for t in page.iter("table") if "fed-sites" in t.get("class", "")]
    assert rows(sites) == {
        "site-a": ["done", "yes", ""],
        "site-b": ["done", "yes", ""],
        "site-c": ["refused", "no", "project prostate: does not take part"],
    }
    (k,) = [p for p in page.iter("p") if "k-reached" in p.get("class", "")]
    assert k.text == "k = 2: reached (2 answered)"


def test_sufficient_statistics_have_a_row_per_site_and_a_pooled_row() -> None:
    output = report()["outputs"]["adc"]
    table = parsed(stats_table("sufficient_stats", "PZ/3/v1", output["groups"]["PZ/3/v1"]))
    header = ["".join(th.itertext()) for th in table.iter("th")][:7]
    assert header == ["Site", "n", "mean", "sd", "variance", "min", "max"]
    found = rows(table)
    assert found["site-a"] == ["10", "1.5", "0.2", "0.04", "1.1", "1.9"]
    # A variance of one value does not exist: shown as a dash, and so is its sd.
    assert found["site-b"] == ["1", "2", "—", "—", "2", "2"]
    assert found["pooled"][:2] == ["11", "1.545"]


def test_a_histogram_table_has_a_column_per_bin_and_the_pooled_quantiles_say_approximate() -> None:
    output = report()["outputs"]["age"]
    markup = stats_table("histogram", "all", output["groups"]["all"])
    table = parsed(markup)
    header = ["".join(th.itertext()) for th in table.iter("th")][:7]
    assert header == ["Site", "n", "below", "[0, 40)", "[40, 60)", "[60, 120)", "above"]
    assert rows(table)["site-b"] == ["8", "0", "0", "2", "6", "0"]
    assert "Pooled quantiles, approximate (from the bins): 0.5: 55 (between 40 and 60)" in markup


def test_histogram_bars_show_each_sites_share_of_its_values_per_bin() -> None:
    svg = parsed(histogram_svg("age", "all", report()["outputs"]["age"]["groups"]["all"]))
    bars = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
    assert len(bars) == 2 * 3  # two sites, three bins
    height = {(b.get("data-site"), b.get("data-bin")): float(b.get("height", "")) for b in bars}
    counts = {(b.get("data-site"), b.get("data-bin")): b.get("data-count") for b in bars}
    assert counts[("site-a", "1")] == "10" and counts[("site-b", "2")] == "6"
    full = 160.0  # the plot's height: a share of 1
    assert height[("site-a", "1")] == pytest.approx(full * 10 / 20, abs=0.1)
    assert height[("site-b", "2")] == pytest.approx(full * 6 / 8, abs=0.1)
    assert height[("site-b", "0")] == 0
    # Bars of one bin sit side by side, in site order, inside the bin's slot.
    xs = [float(b.get("x", "")) for b in bars if b.get("data-bin") == "1"]
    assert xs == sorted(xs) and len(set(xs)) == 2


def test_means_are_drawn_with_one_standard_deviation_either_side() -> None:
    groups = report()["outputs"]["adc"]["groups"]
    svg = parsed(means_svg("adc", groups))
    ns = "{http://www.w3.org/2000/svg}"
    marks = {g.get("data-site"): g for g in svg.iter(f"{ns}g") if g.get("class") == "mean"}
    assert set(marks) == {"site-a", "site-b", "pooled"}
    a = marks["site-a"]
    line, dot = a.find(f"{ns}line"), a.find(f"{ns}circle")
    assert line is not None and dot is not None
    x1, x2, cx = float(line.get("x1", "")), float(line.get("x2", "")), float(dot.get("cx", ""))
    assert cx - x1 == pytest.approx(x2 - cx, abs=0.2)  # symmetric: mean ± sd
    b_line = marks["site-b"].find(f"{ns}line")
    assert b_line is not None and b_line.get("x1") == b_line.get("x2")  # no sd: a dot alone
    b_dot = marks["site-b"].find(f"{ns}circle")
    assert b_dot is not None and float(b_dot.get("cx", "")) > cx  # a mean of 2.0 right of 1.5
    # The scale spans every interval: the pooled 1.545 - 0.25 starts at the plot's left
    # edge, site-b's 2.0 ends at its right edge (640 wide, labels left, margin right).
    ends = [m.find(f"{ns}line") for m in marks.values()]
    assert min(float(e.get("x1", "")) for e in ends if e is not None) == pytest.approx(160)
    assert max(float(e.get("x2", "")) for e in ends if e is not None) == pytest.approx(624)


def test_levene_results_show_the_centre_and_a_pending_test_says_so() -> None:
    table = parsed(levene_table(report()["levene"]))
    found = {
        row.get("data-test"): ["".join(cell.itertext()) for cell in row]
        for row in table.iter("tr")
        if row.get("data-test")
    }
    assert found["PZ_3T"] == [
        "PZ_3T",
        "PZ/3/v1, PZ/3/v2",
        "Brown–Forsythe (median)",
        "3.21",
        "1, 38",
        "0.0789",
        "PZ/3/v1: 20, PZ/3/v2: 20",
        "site-a, site-b",
        "",
    ]
    assert found["later"][2:4] == ["Levene (mean)", "—"] and found["later"][-1] == "pending"
    assert levene_table([]) == ""


def test_counts_get_a_table_and_no_plot() -> None:
    page = parsed(report_html(report()))
    (section,) = [s for s in page.iter("section") if s.get("data-output") == "n"]
    assert section.find(".//{http://www.w3.org/2000/svg}svg") is None
    (table,) = section.iter("table")
    assert rows(table) == {"site-a": ["20"], "site-b": ["8"], "pooled": ["28"]}


def test_every_value_from_the_report_is_escaped() -> None:
    hostile = report()
    hostile["state"]['<script>alert("x")</script>'] = {"state": "done&<b>", "reason": "<i>"}
    hostile["outputs"]["adc"]["groups"]["<g>"] = hostile["outputs"]["adc"]["groups"]["PZ/3/v1"]
    markup = str(report_html(hostile))
    assert "<script>" not in markup and "<i>" not in markup and "<g>" not in markup
    assert "&lt;script&gt;" in markup
    parsed(markup)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3, "3"), (0.1234567, "0.1235"), (None, "—"), (math.nan, "—"), (math.inf, "—"), (True, "—"),
     ("7", "—"), (1e-12, "1e-12")],
)  # fmt: skip
def test_numbers_are_shown_short_and_missing_ones_as_a_dash(value: Any, shown: str) -> None:
    assert number(value) == shown
