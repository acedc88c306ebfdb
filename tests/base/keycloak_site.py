"""A site in the cluster shape on a realm of the real Keycloak, for the identity tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from keycloak import KeycloakAdmin
from tests.base.keycloak_server import (
    KeycloakServer,
    cluster_settings,
    keycloak_server,
    new_realm,
    tokens,
)

from jip.app import build_app
from jip.base.auth import JwksVerifier
from jip.base.keycloak_sessions import sessions_for
from jip.config import Settings
from jip.runtime import Runtime, build_runtime

SITE = "http://testserver"


@dataclass
class Realm:
    """A bootstrapped realm of ``server``, and the site that trusts it."""

    server: KeycloakServer
    name: str
    admin: KeycloakAdmin
    settings: Settings
    runtime: Runtime
    client: TestClient

    def token(self, username: str) -> str:
        """A fresh access token of ``username`` (the password grant `jip login` uses)."""
        return str(tokens(self.server, self.name, username)["access_token"])

    def bearer(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def me(self, token: str) -> httpx.Response:
        return self.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})


@contextlib.contextmanager
def site_on_new_realm(data_dir: Path, prefix: str, **keycloak: float) -> Iterator[Realm]:
    """A new realm (projects lung and brain) and a site trusting it; ``keycloak`` sets
    ``Settings.keycloak`` fields (``recheck_s=1.5``). Skips without a Keycloak."""
    server = keycloak_server()
    name = new_realm(prefix)
    settings = cluster_settings(server, name, data_dir, SITE)
    settings.keycloak = settings.keycloak.model_copy(update=keycloak)
    admin = server.bootstrap(settings, ["lung", "brain"])
    runtime = build_runtime(settings)
    verifier = runtime.identity.authenticator.verifier
    assert isinstance(verifier, JwksVerifier)
    if verifier.sessions.recheck_s != settings.keycloak.recheck_s:
        # jip.backends builds the verifier; until it hands it the settings' session
        # check (sessions_for), the site gets the same object here.
        verifier.sessions = sessions_for(settings)
    try:
        with TestClient(build_app(runtime)) as client:
            yield Realm(server, name, admin, settings, runtime, client)
    finally:
        runtime.close()
