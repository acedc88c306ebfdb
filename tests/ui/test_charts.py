"""The SVG bar charts: every value is in the picture as text and in its titles."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from jip.ui import explore
from jip.ui.charts import MAX_BARS, Bar, bar_chart, describe

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_every_bar_says_its_label_and_count_as_text_and_title() -> None:
    bars = [Bar("CT", 12), Bar("MR", 3), Bar("SEG", 0)]
    root = _parse(bar_chart("Modalities", bars))
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby", "").split()
    assert root.find(f"{SVG}title").text == "Modalities"  # type: ignore[union-attr]
    assert root.find(f"{SVG}title").get("id") == title_id  # type: ignore[union-attr]
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.get("id") == desc_id
    assert desc.text == "Modalities: CT 12 series, MR 3 series, SEG 0 series"
    groups = root.findall(f"{SVG}g")
    assert [(g.get("data-label"), g.get("data-value")) for g in groups] == [
        ("CT", "12"), ("MR", "3"), ("SEG", "0"),
    ]  # fmt: skip
    for group, bar in zip(groups, bars, strict=True):
        assert group.find(f"{SVG}title").text == f"{bar.label}: {bar.value} series"  # type: ignore[union-attr]
        texts = [t.text for t in group.findall(f"{SVG}text")]
        assert texts == [bar.label, str(bar.value)]


def test_bars_scale_to_the_largest_value() -> None:
    root = _parse(bar_chart("Years", [Bar("2020", 10), Bar("2021", 5), Bar("2022", 0)]))
    widths = [float(r.get("width", "-1")) for r in root.iter(f"{SVG}rect")]
    assert widths[0] == 2 * widths[1] and widths[2] == 0


def test_labels_are_escaped_and_long_ones_kept_whole_in_the_title() -> None:
    label = 'Acme <Imaging> & "Sons" Medical Systems International'
    svg = bar_chart("Manufacturers", [Bar(label, 2)])
    assert "<Imaging>" not in svg
    root = _parse(svg)  # well-formed despite the markup in the label
    group = root.find(f"{SVG}g")
    assert group is not None and group.get("data-label") == label
    assert group.find(f"{SVG}title").text == f"{label}: 2 series"  # type: ignore[union-attr]
    drawn = group.find(f"{SVG}text").text or ""  # type: ignore[union-attr]
    assert drawn.endswith("…") and label.startswith(drawn[:-1])


def test_an_empty_chart_and_a_note_are_said_in_words() -> None:
    root = _parse(bar_chart("Studies per year", [], unit="studies", note="not available: x"))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "no studies" in texts and "not available: x" in texts
    assert root.find(f"{SVG}desc").text == "Studies per year: no studies (not available: x)"  # type: ignore[union-attr]
    assert describe("Age", [Bar("40-50", 1)], "series") == "Age: 40-50 1 series"


def test_at_most_max_bars_are_drawn() -> None:
    root = _parse(bar_chart("Many", [Bar(str(i), i + 1) for i in range(MAX_BARS + 5)]))
    assert len(root.findall(f"{SVG}g")) == MAX_BARS


def test_histogram_buckets_lose_their_empty_ends_only() -> None:
    age = explore.CHARTS["age"]
    buckets = {"buckets": [{"key": k, "doc_count": c} for k, c in
                           [("0-10", 0), ("10-20", 2), ("20-30", 0), ("30-40", 1), ("40-50", 0)]]}  # fmt: skip
    assert explore.chart_buckets(age, buckets) == [("10-20", 2), ("20-30", 0), ("30-40", 1)]
    assert explore.chart_buckets(age, {"buckets": [{"key": "0-10", "doc_count": 0}]}) == []
    years = explore.CHARTS["years"]
    dated = {"buckets": [{"key": 0, "key_as_string": "2019-01-01", "doc_count": 4}]}
    assert explore.chart_buckets(years, dated) == [("2019", 4)]
    modalities = explore.CHARTS["modalities"]
    terms = {"buckets": [{"key": "CT", "doc_count": 3}, {"key": "PT", "doc_count": 0}]}
    assert explore.chart_buckets(modalities, terms) == [("CT", 3), ("PT", 0)]


def test_a_year_narrows_the_query() -> None:
    narrowed = explore.within_year({"term": {"Modality": "CT"}}, "2020")
    assert narrowed == {"bool": {"filter": [
        {"term": {"Modality": "CT"}},
        {"range": {"StudyDate": {"gte": "2020-01-01", "lt": "2021-01-01"}}},
    ]}}  # fmt: skip
    assert explore.within_year(None, "1999")["bool"]["filter"][0]["range"]["StudyDate"]["lt"] == (
        "2000-01-01"
    )
