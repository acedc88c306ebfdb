"""The phantom CT and its truth SEG that radiomics' tests read, written once per module."""

from __future__ import annotations

from typing import Any

import pytest
from jip_sdk.phantom import AbdomenPhantom, build_abdomen_phantom, write_ct_series, write_truth_seg


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom()


@pytest.fixture(scope="module")
def inputs(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    input_dir = tmp_path_factory.mktemp("input")
    ct = write_ct_series(phantom, input_dir)
    seg_path = write_truth_seg(phantom, ct.series, input_dir)
    return {"dir": input_dir, "ct": ct, "seg_path": seg_path, "seg_dir": seg_path.parent}
