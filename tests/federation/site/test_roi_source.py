"""``fed-stats`` on voxel values (``parameters.source = "roi"``) at a real site runtime:
ADC maps of the phantom and SEGs on them are ingested and indexed, and the released
sufficient statistics per ``<segment>/<field strength>/<protocol>`` equal NumPy's on the
voxel values read independently with pydicom; Levene's round 2 and the count queries
work on the same values; a group under the minimum cell count is refused."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from jip_sdk import sort_slices
from jip_sdk.seg import SegAlgorithm, SegmentSpec, build_segmentation
from tests.federation.site.support import Researcher

from jip.config import Settings
from jip.federation import DeclaredOutput, DifferencingGuard, DisclosurePolicy, InMemoryCohortLedger
from jip.federation.site.images import StoredImages
from jip.federation.site.runner import Outcome, run_fed_stats
from jip.meta import Indexer
from jip.runtime import Runtime, build_runtime
from jip.samples import random_patient, write_datasets
from jip.samples_dwi import REGIONS, adc_map_series, phantom, region_segmentation

GRID = {"slices": 2, "rows": 24, "columns": 24}
ARMS = [(1.5, "dwi_v1"), (1.5, "dwi_v2"), (3.0, "dwi_v1"), (3.0, "dwi_v2")]
PER_ARM = 3
GROUP_BY = ["MagneticFieldStrength", "ProtocolName"]
LESION = "Small lesion"  # three voxels of one series: a group below the minimum cell


def _label(region: str, field_strength: float, protocol: str) -> str:
    return f"{region.replace(' ', '_')}/{field_strength:g}/{protocol}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("site")
    runtime = build_runtime(Settings(data_dir=root / "site", auth={"enabled": False}))
    rng = random.Random(11)
    arms: dict[tuple[float, str], list[np.ndarray]] = {}
    for n, (field_strength, protocol) in enumerate(ARMS):
        for i in range(PER_ARM):
            adc = adc_map_series(
                patient=random_patient(rng, n * PER_ARM + i),
                field_strength=field_strength,
                protocol=protocol,
                seed=n * PER_ARM + i,
                **GRID,
            )
            seg = region_segmentation(adc)
            objects = [*adc, seg]
            if (n, i) == (len(ARMS) - 1, 0):
                objects.append(_lesion_seg(adc))
            paths = write_datasets(objects, root / "spool")
            volume = _volume(paths[: len(adc)])  # read before ingest moves the files in
            arms.setdefault((field_strength, protocol), []).append(volume)
            for path in paths:
                runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()
    yield {"runtime": runtime, "arms": arms}
    runtime.close()


def _lesion_seg(adc: list[pydicom.Dataset]) -> pydicom.Dataset:
    mask = np.zeros((GRID["slices"], GRID["rows"], GRID["columns"]), dtype=bool)
    mask[0, 12, 10:13] = True
    spec = SegmentSpec(
        label=LESION,
        category=REGIONS[0].category,
        property_type=REGIONS[0].property_type,
        mask=mask,
    )
    return build_segmentation(
        adc,
        [spec],
        algorithm=SegAlgorithm("reader", "1", automatic=False),
        series_description="lesion",
    )


def _volume(paths: list[Path]) -> np.ndarray:
    """An ADC map's real-world values (µm²/s), read with pydicom alone."""
    ordered = sort_slices([pydicom.dcmread(path) for path in paths])
    return np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered]
    )


def _voxels(site: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per group label, the ADC values of every series in the phantom's known masks."""
    masks = phantom(GRID["slices"], GRID["rows"], GRID["columns"]).masks
    found: dict[str, list[np.ndarray]] = {}
    for (field_strength, protocol), volumes in site["arms"].items():
        for volume in volumes:
            for region, mask in masks.items():
                found.setdefault(_label(region, field_strength, protocol), []).append(volume[mask])
    return {label: np.concatenate(parts) for label, parts in found.items()}


def _run(site: dict[str, Any], outputs: tuple[DeclaredOutput, ...], **parameters: Any) -> Outcome:
    runtime: Runtime = site["runtime"]
    job = Researcher.new().job(outputs, project="default")
    job = job.model_copy(update={"parameters": {"source": "roi", **parameters}})
    policy = DisclosurePolicy()
    guard = DifferencingGuard(InMemoryCohortLedger(), policy, b"k" * 32)
    images = StoredImages(runtime.catalog, runtime.storage, runtime.index)
    return run_fed_stats(job, outputs, runtime.index, policy, guard, images=images)


ALL_GROUPS = tuple(_label(r.label, f, p) for r in REGIONS for f, p in ARMS)


def test_sufficient_stats_per_roi_field_and_protocol_equal_numpy(site: dict[str, Any]) -> None:
    output = DeclaredOutput(name="adc", kind="sufficient_stats", field="ADC", groups=ALL_GROUPS)
    outcome = _run(site, (output,), group_by=GROUP_BY)
    assert outcome.released is not None, outcome.refusal
    assert len(outcome.series) == len(ARMS) * PER_ARM  # the ADC maps; SEGs are not MR
    payload = outcome.released["adc"]
    for label, x in _voxels(site).items():
        assert payload[f"{label}:n"] == x.size
        mean = float(np.mean(x))
        assert payload[f"{label}:mean"] == pytest.approx(mean, rel=1e-9, abs=1e-9)
        m2 = float(np.sum((x - mean) ** 2))
        assert payload[f"{label}:m2"] == pytest.approx(m2, rel=1e-9, abs=1e-9)
        assert (payload[f"{label}:min"], payload[f"{label}:max"]) == (x.min(), x.max())
    # the protocol change halves the noise: the spread shows it
    pz = [_label("Peripheral zone", 3.0, p) for p in ("dwi_v1", "dwi_v2")]
    v1, v2 = (payload[f"{g}:m2"] / payload[f"{g}:n"] for g in pz)
    assert v2 < v1


def test_levene_round2_and_count_queries_run_on_voxel_values(site: dict[str, Any]) -> None:
    voxels = _voxels(site)
    groups = ALL_GROUPS[:4]
    centres = {g: (float(np.median(voxels[g])), 0.0) for g in groups}
    thresholds = {g: (float(np.median(voxels[g])),) for g in groups}
    outputs = (
        DeclaredOutput(name="z", kind="levene_round2", field="ADC", groups=groups, centres=centres),
        DeclaredOutput(
            name="q", kind="count_at_most", field="ADC", groups=groups, thresholds=thresholds
        ),
    )
    outcome = _run(site, outputs, group_by=GROUP_BY)
    assert outcome.released is not None, outcome.refusal
    for g in groups:
        z = np.abs(voxels[g] - centres[g][0])
        assert outcome.released["z"][f"{g}:n"] == z.size
        assert outcome.released["z"][f"{g}:mean"] == pytest.approx(float(z.mean()), rel=1e-9)
        assert outcome.released["q"][f"{g}:at_most"] == [int((voxels[g] <= thresholds[g][0]).sum())]


def test_group_by_one_field_as_a_string(site: dict[str, Any]) -> None:
    voxels = _voxels(site)
    label = "Cyst/dwi_v2"
    output = DeclaredOutput(name="n", kind="count", field="ADC", groups=(label,))
    outcome = _run(site, (output,), group_by="ProtocolName")
    assert outcome.released is not None, outcome.refusal
    expected = sum(voxels[_label("Cyst", f, "dwi_v2")].size for f in (1.5, 3.0))
    assert outcome.released["n"] == {f"{label}:n": expected}


def test_a_group_below_the_minimum_cell_is_refused(site: dict[str, Any]) -> None:
    lesion = _label(LESION, 3.0, "dwi_v2")
    output = DeclaredOutput(
        name="adc", kind="sufficient_stats", field="ADC", groups=(lesion, ALL_GROUPS[0])
    )
    outcome = _run(site, (output,), group_by=GROUP_BY)
    assert outcome.released is None
    assert [r["rule"] for r in outcome.refusals] == ["min_cell"]
    assert lesion in outcome.refusals[0]["field"]


def test_roi_without_an_image_source_is_refused(site: dict[str, Any]) -> None:
    runtime: Runtime = site["runtime"]
    output = DeclaredOutput(name="n", kind="count", field="ADC")
    job = Researcher.new().job((output,), project="default")
    job = job.model_copy(update={"parameters": {"source": "roi"}})
    policy = DisclosurePolicy()
    guard = DifferencingGuard(InMemoryCohortLedger(), policy, b"k" * 32)
    outcome = run_fed_stats(job, (output,), runtime.index, policy, guard)
    assert outcome.refusal == "parameters.source 'roi': this site reads no images"
