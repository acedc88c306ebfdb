"""schemathesis against the site's OpenAPI schema: no generated request gets a 500.

The app runs in-process with auth on and a site admin's token; the workflow engine is
the in-memory fake (Airflow's own availability is covered elsewhere, and a 503 for an
absent Airflow is the intended answer, not a defect).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from tests.fakes.workflow_engine import FakeEngine, series_workflow

from jip.app import build_app
from jip.config import Settings
from jip.embedded import with_service_token
from jip.runtime import build_runtime

pytestmark = pytest.mark.slow

# schemathesis parametrises at collection time, so the site is built when the module is
# imported (in a temporary folder removed after the module's tests).
_ROOT = Path(tempfile.mkdtemp(prefix="jip-schema-"))
_SETTINGS = Settings(data_dir=_ROOT / "data")
_RUNTIME = build_runtime(_SETTINGS)
_APP = build_app(_RUNTIME)
_APP.state.runtime.workflow_engine = FakeEngine(series_workflow("organ-seg-radiomics", "organ-seg"))
_TOKEN = with_service_token(_SETTINGS, _RUNTIME).api_token

schema = schemathesis.openapi.from_asgi("/api/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _RUNTIME.close()
    shutil.rmtree(_ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    assert _TOKEN is not None
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {_TOKEN.get_secret_value()}"}
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
