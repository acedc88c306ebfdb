"""Fixtures of the site tests against the fake hub: ``hub`` (a :class:`FakeHub` over
mutual TLS) and ``site`` (a site joined to it, with 60 known ages). Modules that need
another hub or site define their own under the same names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.federation.site.fakehub import FakeHub, running_hub
from tests.federation.site.support import Site, ages, make_site


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with running_hub(tmp_path) as fake:
        yield fake


@pytest.fixture
def site(tmp_path: Path, hub: FakeHub) -> Iterator[Site]:
    made = make_site(tmp_path / "site", hub, ages(60))
    yield made
    made.index.close()
    made.engine.dispose()
