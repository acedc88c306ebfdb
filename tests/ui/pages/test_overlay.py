"""The series page's SEG overlay and result tables, on a phantom CT with its truth SEG."""

from __future__ import annotations

import copy
import io
import re
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jip_sdk.phantom import (
    TRUTH_SEGMENTS,
    AbdomenPhantom,
    PhantomSeries,
    build_abdomen_phantom,
    write_ct_series,
    write_truth_seg,
)
from jip_sdk.series import read_datasets, sort_slices
from PIL import Image
from pydicom.sr.codedict import codes
from tests.base.support import add_user, auth_for
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.ui.pages.support import browser_login

from jip.base.schema import ProjectRole
from jip.flow import records
from jip.flow.schema import ResultKind
from jip.meta.indexer import Indexer
from jip.runtime import Runtime
from jip.ui import overlay

ORGANS = ("liver", "spleen")  # segment numbers 1 and 2


@dataclass
class PhantomSite:
    runtime: Runtime
    ct: PhantomSeries
    seg: pydicom.Dataset
    phantom: AbdomenPhantom
    source: list[pydicom.Dataset]  # the CT slices in order

    @property
    def instances(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.source]

    def overlay_url(self, index: int, seg_series: str | None = None) -> str:
        seg = seg_series or str(self.seg.SeriesInstanceUID)
        return (
            f"/ui/overlay/{self.ct.study_instance_uid}/{self.ct.series_instance_uid}/{seg}/"
            f"{self.instances[index]}"
        )

    @property
    def page_url(self) -> str:
        return f"/ui/series/{self.ct.study_instance_uid}/{self.ct.series_instance_uid}"


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom(shape=(12, 64, 64), spacing_mm=(6.0, 6.0, 12.0))


def _ingest(runtime: Runtime, paths: list[Path]) -> None:
    for path in paths:
        runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()


@pytest.fixture
def site(runtime: Runtime, tmp_path: Path, phantom: AbdomenPhantom, app: FastAPI) -> PhantomSite:
    overlay.CACHE.items.clear()
    ct = write_ct_series(phantom, tmp_path / "ct")
    seg_path = write_truth_seg(phantom, ct.series, tmp_path / "seg", organs=ORGANS)
    source = sort_slices(read_datasets(ct.series))
    seg = pydicom.dcmread(seg_path)
    _ingest(runtime, [*sorted(ct.series.path.glob("*.dcm")), seg_path])  # moves the files
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    add_user(runtime, "otto", projects={"elsewhere": ProjectRole.RESEARCHER})
    app.state.runtime.workflow_engine = FakeEngine(
        series_workflow("organ-seg-radiomics", "organ-seg")
    )
    return PhantomSite(runtime, ct, seg, phantom, source)


def _rgba(response_content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response_content)).convert("RGBA"))


def _slice_with_both(phantom: AbdomenPhantom) -> int:
    both = [k for k in range(phantom.hu.shape[0]) if all(phantom.masks[o][k].any() for o in ORGANS)]
    assert both, "the phantom has no slice with liver and spleen"
    return both[len(both) // 2]


def test_overlay_is_coloured_exactly_where_the_mask_is(
    site: PhantomSite, client: TestClient
) -> None:
    browser_login(client, "rita")
    k = _slice_with_both(site.phantom)
    response = client.get(site.overlay_url(k))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    rgba = _rgba(response.content)
    liver, spleen = (site.phantom.masks[o][k] for o in ORGANS)
    assert rgba.shape == (*liver.shape, 4)
    np.testing.assert_array_equal(rgba[..., 3] > 0, liver | spleen)
    assert (rgba[~(liver | spleen)] == 0).all()  # transparent black elsewhere
    for organ, mask in zip(ORGANS, (liver, spleen), strict=True):
        colours = np.unique(rgba[mask][:, :3], axis=0)
        assert len(colours) == 1
        expected = np.array(TRUTH_SEGMENTS[organ].color_rgb)
        assert np.abs(colours[0].astype(int) - expected).max() <= 2, (organ, colours[0])

    only_spleen = _rgba(client.get(site.overlay_url(k), params={"segment": 2}).content)
    np.testing.assert_array_equal(only_spleen[..., 3] > 0, spleen)


def test_an_image_no_frame_refers_to_gets_a_transparent_overlay(
    site: PhantomSite, client: TestClient
) -> None:
    browser_login(client, "rita")
    empty = [k for k in range(len(site.instances)) if not site.phantom.masks["liver"][k].any()
             and not site.phantom.masks["spleen"][k].any()]  # fmt: skip
    assert empty
    rgba = _rgba(client.get(site.overlay_url(empty[0])).content)
    assert rgba.shape[:2] == (64, 64) and not rgba.any()


def test_series_page_shows_the_overlay_legend(site: PhantomSite, client: TestClient) -> None:
    browser_login(client, "rita")
    page = client.get(site.page_url)
    assert page.status_code == 200, page.text
    legend = re.findall(r'data-segment="(\d+)" checked>\s*<span class="swatch" data-color="(#[0-9a-f]{6})"></span> ([^<]+)</label>', page.text)  # fmt: skip
    assert [(n, label.strip()) for n, _, label in legend] == [("1", "Liver"), ("2", "Spleen")]
    assert f'data-overlay="/ui/overlay/{site.ct.study_instance_uid}/' in page.text
    assert f'data-instance="{site.instances[0]}"' in page.text
    assert "Overlay not shown" not in page.text


def test_series_page_links_to_the_configured_viewer(
    site: PhantomSite, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser_login(client, "rita")
    monkeypatch.setattr(site.runtime.settings.ui.ohif, "enabled", False)
    assert 'id="open-viewer"' not in client.get(site.page_url).text
    template = "/ohif/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={series}"
    monkeypatch.setattr(site.runtime.settings.ui, "viewer_url_template", template)
    link = re.search(
        r'<a class="button" id="open-viewer" href="([^"]+)"', client.get(site.page_url).text
    )
    assert link, "no viewer link"
    assert link.group(1) == (
        f"/ohif/viewer?StudyInstanceUIDs={site.ct.study_instance_uid}"
        f"&amp;SeriesInstanceUIDs={site.ct.series_instance_uid}"
    )


def test_another_projects_user_gets_no_overlay(site: PhantomSite, client: TestClient) -> None:
    browser_login(client, "rita")
    assert client.get(site.overlay_url(0)).status_code == 200  # now cached
    client.cookies.clear()
    browser_login(client, "otto")
    response = client.get(site.overlay_url(0))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


def test_a_broken_seg_is_reported_not_a_server_error(
    site: PhantomSite, client: TestClient, tmp_path: Path
) -> None:
    broken = copy.deepcopy(site.seg)
    broken.SeriesInstanceUID = pydicom.uid.generate_uid()
    broken.SOPInstanceUID = pydicom.uid.generate_uid()
    broken.file_meta.MediaStorageSOPInstanceUID = broken.SOPInstanceUID
    del broken.PerFrameFunctionalGroupsSequence
    path = tmp_path / "broken.dcm"
    broken.save_as(path)
    _ingest(site.runtime, [path])
    browser_login(client, "rita")
    page = client.get(site.page_url)
    assert page.status_code == 200, page.text
    assert "Overlay not shown" in page.text and str(broken.SOPInstanceUID) in page.text
    assert page.text.count('class="legend"') == 1  # the good SEG is still drawn
    response = client.get(site.overlay_url(0, seg_series=str(broken.SeriesInstanceUID)))
    assert response.status_code == 400
    assert "per-frame functional groups" in response.text


def test_a_fractional_seg_is_drawn_with_partial_alpha(site: PhantomSite) -> None:
    source = site.source
    k = _slice_with_both(site.phantom)
    fraction = np.zeros((*site.phantom.hu.shape, 1), dtype=np.float32)
    fraction[k, site.phantom.masks["liver"][k]] = 0.5
    fraction[k, site.phantom.masks["spleen"][k]] = 1.0
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=fraction,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Organs",
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.Organ,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="JIP",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
        max_fractional_value=200,
    )
    drawn = overlay.decode([seg], {})
    assert [(s.number, s.label, s.rgb) for s in drawn.segments] == [
        (1, "Organs", overlay.PALETTE[0])
    ]
    rgba = _rgba(drawn.png(site.instances[k]))
    assert set(np.unique(rgba[site.phantom.masks["liver"][k]][:, 3])) == {128}
    assert set(np.unique(rgba[site.phantom.masks["spleen"][k]][:, 3])) == {255}


def test_frames_without_a_source_reference_are_matched_by_position(site: PhantomSite) -> None:
    seg = copy.deepcopy(site.seg)
    for group in seg.PerFrameFunctionalGroupsSequence:
        del group.DerivationImageSequence
    source = site.source
    positions = {overlay.position_key(ds.ImagePositionPatient): str(ds.SOPInstanceUID)
                 for ds in source}  # fmt: skip
    by_reference = overlay.decode([site.seg], {})
    by_position = overlay.decode([seg], positions)
    assert by_position.frames.keys() == by_reference.frames.keys()
    k = _slice_with_both(site.phantom)
    assert by_position.png(site.instances[k]) == by_reference.png(site.instances[k])


def _record_radiomics(site: PhantomSite) -> None:
    run_id = "jip__20260101T000000_abcdef"
    # Results are shown for runs the caller may see: the run is recorded in rita's project.
    records.add_run(
        site.runtime.engine,
        records.RunRecord(
            run_id=run_id, dag_id="organ-seg-radiomics", series=[site.ct.series_instance_uid],
            params={}, cohort_id=None, rule_id=None, created_by="rita",
            created_at=records.now(), projects=["default"],
        ),
    )  # fmt: skip
    results_root = Path(site.runtime.settings.resolved_results_url.removeprefix("file://"))
    key = f"runs/{run_id}/seg/radiomics.csv"
    (results_root / key).parent.mkdir(parents=True)
    (results_root / key).write_text(
        "series_instance_uid,seg_series_instance_uid,segment_number,segment_label,"
        "original_shape_VoxelVolume\n"
        f"{site.ct.series_instance_uid},{site.seg.SeriesInstanceUID},1,Liver,1500.5\n"
        f"{site.ct.series_instance_uid},{site.seg.SeriesInstanceUID},2,Spleen,300.25\n"
    )
    record = records.ResultRecord(
        id=None, run_id=run_id, series_instance_uid=site.ct.series_instance_uid,
        operator="radiomics", kind=ResultKind.FILE, key=key, name="seg/radiomics.csv",
        size_bytes=(results_root / key).stat().st_size,
    )  # fmt: skip
    records.add_results(site.runtime.engine, [record])


def test_series_page_shows_radiomics_rows_and_downloads_the_csv(
    site: PhantomSite, client: TestClient
) -> None:
    _record_radiomics(site)
    browser_login(client, "rita")
    page = client.get(site.page_url).text
    rows = re.findall(r"<tr><td>(\d)</td><td>(\w+)</td><td>([\d.]+)</td></tr>", page)
    assert rows == [("1", "Liver", "1500.5"), ("2", "Spleen", "300.25")]
    link = re.search(r'<a class="download" href="([^"]+)"', page)
    assert link
    download = client.get(link.group(1))
    assert download.status_code == 200
    assert "Liver" in download.text and "attachment" in download.headers["content-disposition"]


def test_series_results_api_is_limited_to_the_callers_projects(
    site: PhantomSite, client: TestClient
) -> None:
    _record_radiomics(site)
    params = {"series": site.ct.series_instance_uid}
    mine = client.get("/api/flow/results", params=params, headers=auth_for(client, "rita"))
    assert mine.status_code == 200, mine.text
    assert [r["name"] for r in mine.json()] == ["seg/radiomics.csv"]
    assert client.get("/api/flow/results", params={**params, "kind": "dicom"},
                      headers=auth_for(client, "rita")).json() == []  # fmt: skip
    theirs = client.get("/api/flow/results", params=params, headers=auth_for(client, "otto"))
    assert theirs.status_code == 404
