"""`jip samples harmonisation`: one site's ADC study data, written and (with --ingest)
stored and indexed, so that a federated roi job finds the maps and their SEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from jip.cli.main import _register, cli
from jip.config import Settings
from jip.federation.site import StoredImages
from jip.meta import cohort_values
from jip.runtime import build_runtime
from jip.samples_dwi import REGIONS

_register()


def test_the_study_data_lands_in_the_site_with_segs_over_the_maps(tmp_path: Path) -> None:
    site, out = tmp_path / "site", tmp_path / "dicom"
    args = ["--data-dir", str(site), "samples", "harmonisation", str(out), "--patients", "1",
            "--field-strength", "1.5", "--description", "ADC here", "--ingest"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    maps = sorted((out / "adc").rglob("*.dcm"))
    first = pydicom.dcmread(maps[0])
    assert (first.SeriesDescription, float(first.MagneticFieldStrength)) == ("ADC here", 1.5)
    assert {pydicom.dcmread(p).ProtocolName for p in maps} == {"dwi_v1", "dwi_v2"}

    runtime = build_runtime(Settings(data_dir=site, auth={"enabled": False}))
    try:
        found = cohort_values(
            runtime.index,
            {"term": {"SeriesDescription.keyword": "ADC here"}},
            "default",
            ["MagneticFieldStrength"],
        )
        assert len(found) == 2
        images = StoredImages(runtime.catalog, runtime.storage, runtime.index)
        values = images.segment_values(sorted(found), "default")
    finally:
        runtime.close()
    assert sorted(values) == sorted(found)
    for per_series in values.values():
        assert set(per_series) == {r.label for r in REGIONS}
        for region in REGIONS:  # the map's truth plus noise, in µm²/s
            assert np.mean(per_series[region.label]) == pytest.approx(region.adc * 1e6, rel=0.05)
