"""Fixtures of the `jip` command's tests, and those they share with other packages.

``test_user.py`` runs on the auth-enabled site of ``tests/base`` (``settings``,
``runtime``, ``app``, with cheap password hashing); ``test_dicom.py`` on a DIMSE listener
of ``tests/store`` (``make_module_listener``). They are imported here, not copied.
"""

from __future__ import annotations

from tests.base.conftest import app, cheap_password_hashing, issuer_key, runtime, settings
from tests.store.conftest import make_module_listener

__all__ = [
    "app",
    "cheap_password_hashing",
    "issuer_key",
    "make_module_listener",
    "runtime",
    "settings",
]
