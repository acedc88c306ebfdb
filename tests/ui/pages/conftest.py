"""The page tests run in-process (TestClient) on the auth-enabled site of ``tests/base``.

Its fixtures are imported here, not copied; the browser tests one folder up serve a
site over a real socket instead (``tests/ui/conftest.py``).
"""

from __future__ import annotations

from tests.base.conftest import (
    app,
    cheap_password_hashing,
    client,
    issuer_key,
    runtime,
    settings,
    site,
)

__all__ = ["app", "cheap_password_hashing", "client", "issuer_key", "runtime", "settings", "site"]
