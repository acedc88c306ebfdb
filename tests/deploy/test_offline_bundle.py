"""The offline bundle carries exactly the images the chart references (rendered with
its default values by Helm's engine) plus the operators' images and their SDK base;
third-party images are listed for the site to provide, never silently left out."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart")

from tests.deploy.images_built import ROOT, deploy_module, ensure_built, podman

VALUES = yaml.safe_load((ROOT / "charts" / "jip" / "values.yaml").read_text())


def test_plan_splits_the_charts_images_into_ours_and_the_sites() -> None:
    bundle = deploy_module("offline_bundle")
    version = deploy_module("images").version()
    referenced = bundle.chart_images()
    ours, external = bundle.plan(referenced)
    names = ["operator-sdk", *deploy_module("images").operator_names()]
    operators = {f"jip/{name}:{version}" for name in names}
    assert set(ours) | set(external) == referenced | operators
    assert {f"jip/jip:{version}", f"jip/airflow:{version}", f"jip/organ-seg:{version}"} <= set(ours)
    assert f"jip/operator-sdk:{version}" in ours
    # Every third-party image is one that values.yaml names under images.* (site-mirrored).
    named = {
        f"{image['repository']}:{image['tag']}"
        for image in VALUES["images"].values()
        if isinstance(image, dict) and not image["repository"].startswith("jip/")
    }
    assert set(external) == named


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_archive_holds_exactly_the_planned_images(tmp_path: Path) -> None:
    images = deploy_module("images")
    ensure_built(*(image.name for image in images.all_images()))
    bundle = deploy_module("offline_bundle")
    out = bundle.write_bundle(tmp_path / "jip-offline.tar", podman=podman())
    inside, external = bundle.bundle_contents(out)
    referenced = bundle.chart_images()
    names = [images.SDK, *images.operator_names()]
    operators = {f"jip/{name}:{images.version()}" for name in names}
    assert inside | external == referenced | operators
    assert not inside & external
    with tarfile.open(out) as archive:
        names = set(archive.getnames())
        assert {"install.sh", "images.txt", "chart/jip/Chart.yaml"} <= names
        assert archive.getmember("install.sh").mode & 0o111
