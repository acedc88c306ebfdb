"""Who belongs to the network: sites (enrolled by one-time token, known by certificate)
and researchers (known by bearer token).

Tokens are random, shown once, and stored as SHA-256 only: a copy of the hub's database
lets nobody enrol a site or submit a job. An enrolment token reads
``<site_id>.<secret>``, so the site can put its id in its CSR's CN before it ever talks
to the hub; the token is consumed by the enrolment that uses it, and expires unused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, update

from jip.errors import Conflict, Forbidden, Invalid, Unauthorized
from jip.federation.crypto import decode_bytes
from jip.federation.hub.home import Hub
from jip.federation.hub.pki import cert_pem, common_name, fingerprint
from jip.federation.hub.tables import EnrolmentToken, HubSite, Researcher
from jip.federation.protocol import Identifier

ENROLMENT_TTL = dt.timedelta(hours=24)
RESEARCHER_PREFIX = "jipr_"
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str, what: str) -> str:
    """``name`` when it is an identifier (letters, digits, '_' and '-', 64 at most)."""
    try:
        return _IDENTIFIER.validate_python(name)
    except ValidationError as exc:
        raise Invalid(
            f"{what} {name!r}: use letters, digits, '_' and '-' (64 at most, "
            "starting with a letter or digit)"
        ) from exc


@dataclass(frozen=True)
class Enrolment:
    """What `jip hub site add` prints once: the token (never stored), its expiry and the
    CA's SHA-256, which the site may check before it trusts the hub."""

    site_id: str
    token: str
    expires_at: dt.datetime
    ca_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "token": self.token,
            "expires_at": self.expires_at.isoformat(),
            "ca_sha256": self.ca_sha256,
        }


def add_site(
    hub: Hub, name: str, ttl: dt.timedelta = ENROLMENT_TTL, *, replace: bool = False
) -> Enrolment:
    """Register site ``name`` and make its one-time enrolment token. A site that has not
    enrolled yet gets a new token (the old ones stop working); an enrolled one only with
    ``replace`` (a site that lost its keys): its enrolment replaces the old certificate."""
    site_id = check_name(name, "site")
    now = hub.clock()
    token = f"{site_id}.{secrets.token_urlsafe(32)}"
    with hub.sessions.begin() as session:
        site = session.get(HubSite, site_id)
        if site is None:
            session.add(HubSite(id=site_id, created_at=now))
            session.flush()
        elif site.enrolled_at is not None and not replace:
            raise Conflict(
                f"site {site_id} is already enrolled; --replace issues a token whose "
                "enrolment replaces its certificate"
            )
        session.execute(
            update(EnrolmentToken)
            .where(EnrolmentToken.site_id == site_id, EnrolmentToken.used_at.is_(None))
            .values(expires_at=now)
        )
        session.add(
            EnrolmentToken(
                token_sha256=token_hash(token),
                site_id=site_id,
                created_at=now,
                expires_at=now + ttl,
            )
        )
    return Enrolment(site_id, token, now + ttl, fingerprint(hub.authority.cert))


def list_sites(hub: Hub) -> list[dict[str, Any]]:
    with hub.sessions() as session:
        sites = session.scalars(select(HubSite).order_by(HubSite.id)).all()
        return [
            {
                "site_id": s.id,
                "enrolled": s.enrolled_at is not None,
                "enrolled_at": s.enrolled_at.isoformat() if s.enrolled_at else None,
                "identity_key": s.identity_key,
                "box_key": s.box_key,
                "certificate_sha256": s.cert_sha256,
            }
            for s in sites
        ]


def site_keys(hub: Hub) -> list[dict[str, str]]:
    """The enrolled sites' public keys, as a researcher may read them (``GET /api/sites``):
    ``site_id``, ``box_key`` (X25519: later rounds are sealed to it) and ``identity_key``."""
    with hub.sessions() as session:
        sites = session.scalars(
            select(HubSite).where(HubSite.enrolled_at.is_not(None)).order_by(HubSite.id)
        ).all()
        return [
            {"site_id": s.id, "box_key": s.box_key or "", "identity_key": s.identity_key or ""}
            for s in sites
        ]


def enrol(hub: Hub, token: str, csr_pem: str, identity_key: str, box_key: str) -> dict[str, str]:
    """Consume ``token`` and sign the site's CSR: ``{site_id, certificate_pem, ca_pem}``.
    Forbidden for a token that is unknown, used or expired (told apart for nobody)."""
    decode_bytes(identity_key, "identity_key", 32)
    decode_bytes(box_key, "box_key", 32)
    now = hub.clock()
    refused = Forbidden("enrolment token: unknown, already used or expired; ask the hub admin")
    with hub.sessions.begin() as session:
        row = session.get(EnrolmentToken, token_hash(token))
        if row is None or row.used_at is not None or row.expires_at <= now:
            raise refused
        cert = hub.authority.issue_site(csr_pem, row.site_id)
        claimed = session.execute(
            update(EnrolmentToken)
            .where(
                EnrolmentToken.token_sha256 == row.token_sha256, EnrolmentToken.used_at.is_(None)
            )
            .values(used_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent enrolment won
            raise refused
        site = session.get_one(HubSite, row.site_id)
        site.enrolled_at = now
        site.identity_key = identity_key
        site.box_key = box_key
        site.cert_sha256 = fingerprint(cert)
        site.cert_not_after = cert.not_valid_after_utc
    return {"site_id": row.site_id, "certificate_pem": cert_pem(cert), "ca_pem": hub.authority.pem}


def site_for_certificate(hub: Hub, pem: str) -> str:
    """The site a verified client certificate names; Forbidden unless it is the
    certificate the hub issued last to that site."""
    cert = hub.authority.check_site_cert(pem)
    site_id = common_name(cert)
    with hub.sessions() as session:
        site = session.get(HubSite, site_id) if site_id else None
        if site is None or site.cert_sha256 != fingerprint(cert):
            raise Forbidden("client certificate: replaced or revoked; enrol the site again")
        return site.id


def add_researcher(hub: Hub, name: str) -> dict[str, str]:
    """Register researcher ``name``: ``{researcher, token}``, the bearer token shown once."""
    researcher_id = check_name(name, "researcher")
    token = RESEARCHER_PREFIX + secrets.token_urlsafe(32)
    with hub.sessions.begin() as session:
        if session.get(Researcher, researcher_id) is not None:
            raise Conflict(f"researcher {researcher_id} already exists")
        session.add(
            Researcher(id=researcher_id, token_sha256=token_hash(token), created_at=hub.clock())
        )
    return {"researcher": researcher_id, "token": token}


def researcher_for_token(hub: Hub, token: str) -> str:
    with hub.sessions() as session:
        found = session.scalar(
            select(Researcher.id).where(Researcher.token_sha256 == token_hash(token))
        )
    if found is None:
        raise Unauthorized("bearer token: unknown; `jip hub researcher add` makes one")
    return found
