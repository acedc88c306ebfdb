"""The chart, loaded once by Helm's own engine (helm-python-sdk); nothing needs a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.charts.support import CHART


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart")
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded
