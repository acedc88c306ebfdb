"""The settings sections of who may reach a site: tokens, Keycloak sessions, /metrics, HTTP.

Part of :mod:`jip.config` (which re-exports them and holds the one ``Settings``); kept
apart so that each module stays one readable page.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class SettingsModel(BaseModel):
    """The base of every settings section. Its validators are built when a section is
    first validated, not on import: a DICOM listener process only unpickles the settings
    `jip up` hands it (:mod:`jip.store.dimse.listener`), so it never builds them, which
    would cost it tens of ms of CPU before it accepts."""

    model_config = ConfigDict(defer_build=True)


class AuthSettings(SettingsModel):
    """Token validation; the embedded issuer is used when ``issuer_url`` is unset."""

    enabled: bool = True
    issuer_url: str | None = None
    audience: str = "jip"
    # Short, so that what a token says (roles, projects) cannot lag far behind; the
    # embedded issuer's tokens are also checked per request against the user's token
    # version (disable, removal, role change and password change end them at once).
    access_token_ttl_s: int = Field(default=300, ge=60)
    # Cluster shape: where the issuer's keys are; unset reads jwks_uri from its discovery.
    jwks_url: str | None = None
    # Embedded issuer: the URL people and the CLI reach this site at, its `iss` claim.
    # Unset: http://<http_host>:<http_port>.
    public_url: str | None = None
    refresh_token_ttl_s: int = Field(default=86400, ge=60)
    # Browser login may redirect to the site itself, loopback URIs (RFC 8252) and these.
    redirect_uris: list[str] = Field(default_factory=list)
    # Failed logins per username and client IP before the issuer answers 429.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_s: int = Field(default=300, ge=1)
    # Failed logins of one username from any address, and of the whole site, within
    # the window before logins are refused (password guessing and spraying).
    login_max_failures_per_user: int = Field(default=20, ge=1)
    login_max_failures_site: int = Field(default=200, ge=1)
    # Password hashes (scrypt, 32 MiB each) computed at once; a login that finds no free
    # slot within password_hash_wait_s is answered 503 with Retry-After.
    max_concurrent_password_hashes: int = Field(default=4, ge=1)
    password_hash_wait_s: float = Field(default=5.0, ge=0)
    # First run: the `admin` user's password (JIP_AUTH__ADMIN_PASSWORD); unset, a
    # one-time password is generated and shown once.
    admin_password: SecretStr | None = None


class KeycloakSettings(SettingsModel):
    """Cluster shape: how often Keycloak is asked whether a token's session holds."""

    # Seconds a session's answer (user enabled, groups, realm roles) is reused; 0: ask
    # Keycloak on every request. A disabled user is refused within this window.
    recheck_s: float = Field(default=30.0, ge=0)
    # Keycloak unreachable: tokens are still accepted this long after the first failed
    # check, then refused (503) until it answers again (fail closed).
    unreachable_grace_s: float = Field(default=60.0, ge=0)
    # The realm's userinfo endpoint; unset: beside auth.jwks_url when that is Keycloak's
    # certs URL, else under auth.issuer_url. Keycloak checks the token's issuer against
    # the URL it is asked at, so set it when the two differ (hostname-backchannel-dynamic).
    userinfo_url: str | None = None


class MetricsSettings(SettingsModel):
    """Who may read /metrics (jip.edge.MetricsGate) besides loopback clients."""

    # CIDRs whose direct (not proxied) requests may scrape, e.g. Prometheus's pod network.
    allow: list[str] = Field(default_factory=list)
    # A file holding a bearer token that may scrape from anywhere (a mounted Secret).
    token_file: Path | None = None

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"metrics.allow: {cidr!r} is no IP address or CIDR") from None
        return value


class HttpSettings(SettingsModel):
    """The HTTP server: whom to believe about the client's address, request body limits."""

    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IP addresses or
    # CIDR networks, "*" for any): a reverse proxy on this machine by default. From any
    # other peer the headers are ignored and the connection's address is the client's
    # (login throttling and the audit log use it).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Largest JSON or form request body; STOW-RS and file uploads stream and have
    # their own limits (store.max_upload_bytes).
    max_json_body_bytes: int = Field(default=1024**2, ge=1024)
