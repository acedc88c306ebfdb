"""The harmonisation study's data, made in code with known values (use case 1).

Each site scans the prostate phantom of :mod:`jip.samples_dwi` at one field strength,
half its patients with the old protocol (``dwi_v1``) and half with the new one
(``dwi_v2``, half the noise). The DWI series (b = 0, 500, 1000) go through the real
``adc-map`` operator; a SEG with one segment per region is made over each ADC map. What
the site stores is the DWI, the fitted ADC map and the SEG. The values a pooled
computation needs are read back here from the ADC map files with pydicom and the
phantom's own masks, independently of the code under test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from jip_sdk import sort_slices
from jip_sdk.testing import run_operator_main

from jip.samples import random_patient, write_datasets
from jip.samples_dwi import REGIONS, dwi_series, phantom, region_segmentation

ADC_MAP = Path(__file__).resolve().parents[3] / "operators" / "adc-map" / "main.py"
SLICES, ROWS, COLUMNS = 3, 32, 32
PROTOCOLS = ("dwi_v1", "dwi_v2")


def label(text: str) -> str:
    """A region's label as group labels carry it."""
    return text.replace(" ", "_")


def strength(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class SiteData:
    """One site's files and, per group label ``<region>/<field strength>/<protocol>``,
    the voxel values (µm²/s) of its ADC maps inside that region."""

    files: list[Path] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    adc_series: list[str] = field(default_factory=list)


def make_site(
    root: Path, *, field_strength: float, patients: int, seed: int, description: str
) -> SiteData:
    """``patients`` per protocol; the ADC maps named ``description`` (a site's own
    wording, which its vocabulary maps to the network's)."""
    data = SiteData()
    dwi_dir, out_dir = root / "dwi", root / "adc"
    rng = random.Random(seed)
    for p, protocol in enumerate(PROTOCOLS * patients):
        patient = random_patient(rng, seed * 100 + p)
        dwi = dwi_series(
            patient=patient, field_strength=field_strength, protocol=protocol,
            slices=SLICES, rows=ROWS, columns=COLUMNS, seed=seed * 100 + p,
        )  # fmt: skip
        data.files += write_datasets(dwi, dwi_dir / str(dwi[0].SeriesInstanceUID))
    fitted = run_operator_main(
        ADC_MAP, input_dir=dwi_dir, output_dir=out_dir,
        params={"series_description": description},
    )  # fmt: skip
    if fitted.returncode != 0:
        pytest.fail(f"adc-map failed:\n{fitted.stdout}\n{fitted.stderr}")
    masks = phantom(SLICES, ROWS, COLUMNS).masks
    for series_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        maps = sort_slices([pydicom.dcmread(f) for f in sorted(series_dir.glob("*.dcm"))])
        data.files += sorted(series_dir.glob("*.dcm"))
        data.adc_series.append(str(maps[0].SeriesInstanceUID))
        seg = region_segmentation(maps)
        seg_path = root / "seg" / f"{seg.SOPInstanceUID}.dcm"
        seg_path.parent.mkdir(parents=True, exist_ok=True)
        seg.save_as(seg_path)
        data.files.append(seg_path)
        volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in maps])
        volume = volume + float(maps[0].get("RescaleIntercept", 0))
        protocol = str(maps[0].ProtocolName)
        for region in REGIONS:
            group = f"{label(region.label)}/{strength(field_strength)}/{protocol}"
            data.values.setdefault(group, []).extend(volume[masks[region.label]].tolist())
    return data


def groups(strengths: tuple[float, ...]) -> list[str]:
    return [
        f"{label(r.label)}/{strength(s)}/{p}" for r in REGIONS for s in strengths for p in PROTOCOLS
    ]
