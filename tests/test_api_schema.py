"""schemathesis against the site's OpenAPI schema: no generated request gets a 500.

The app runs in-process with auth on, once with each role's token: a site admin (the
service token `jip up` mints), a researcher and a viewer of a project; the workflow engine is
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
from jip.base.schema import ProjectRole, now_utc
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
_MEMBERS = {"researcher": ProjectRole.RESEARCHER, "viewer": ProjectRole.VIEWER}
_RUNTIME.identity.projects.create("lung")
for _name, _role in _MEMBERS.items():
    _RUNTIME.identity.users.create(_name, "a fuzzing password")
    _RUNTIME.identity.projects.set_member("lung", _name, _role)


def _token(role: str) -> str:
    """A fresh token per case: user tokens live minutes, the fuzz run may last longer."""
    if role == "admin":
        assert _TOKEN is not None
        return _TOKEN.get_secret_value()
    issuer = _RUNTIME.identity.issuer
    assert issuer is not None
    user = _RUNTIME.identity.users.get(role)
    return issuer.signer.access_token(user, now=now_utc(), client_id="jip-cli")


schema = schemathesis.openapi.from_asgi("/api/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _RUNTIME.close()
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.mark.parametrize("role", ["admin", "researcher", "viewer"])
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: schemathesis.Case, role: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {_token(role)}"}
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
