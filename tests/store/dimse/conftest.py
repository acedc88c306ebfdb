"""The DIMSE tests' fixtures with the switches they need said out loud.

The listener is closed by default (jip.store.dimse.access): an AE that is no peer may
only C-ECHO. Tests of storage, the fast path and the Q/R services that send as ad-hoc
AE titles (storescu's STORESCU, pynetdicom's SENDER, ...) run against a site that opened
that on purpose, as a site admin onboarding modalities would: :data:`OPEN`. The tests of
the closed defaults themselves are in ``test_access.py`` and ``test_limits.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.store.dimse.support import OPEN

from jip.config import AuthSettings, Settings, StoreSettings
from jip.runtime import build_runtime
from jip.store.dimse.ae import build_ae, start_server

if TYPE_CHECKING:
    from tests.store.conftest import Listener


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Settings, int, object]]:
    """The site's AE in-process, open to every calling AE (:data:`OPEN`)."""
    settings = Settings(
        data_dir=tmp_path,
        store=StoreSettings(dicom_host="127.0.0.1", dicom_port=0, **OPEN),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)
    ae = build_ae(settings.store)
    running = start_server(ae, runtime, "127.0.0.1", 0)
    try:
        yield settings, running.server_address[1], running
    finally:
        running.shutdown()
        runtime.close()


@pytest.fixture
def listener(make_listener: Callable[..., Listener]) -> Listener:
    """A listener open to every calling AE (:data:`OPEN`)."""
    return make_listener(**OPEN)
