"""The site's federation identity on disk, and enrolment with a hub (`jip fed join`).

``<data_dir>/federation/`` holds, each file 0600 in a 0700 folder: ``identity.key``
(Ed25519, the site's signing identity), ``box.key`` (X25519), ``tls.key`` (ECDSA P-256)
with ``client.pem`` (the client certificate the hub's CA signed), ``ca.pem`` (the hub's
CA, pinned: the agent trusts no other), ``ledger.key`` (the secret the released-cohort
ledger hashes series under) and ``hub.json`` (the hub's URL and this site's id).
"""

from __future__ import annotations

import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jip.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable, detail_of
from jip.federation.crypto import (
    decode_bytes,
    encode_key,
    generate_box_keys,
    generate_signing_keys,
)
from jip.federation.private_files import write_private

ENROL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SiteFiles:
    """Where one site keeps its federation identity."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> SiteFiles:
        return cls(Path(data_dir) / "federation")

    identity_key = property(lambda self: self.root / "identity.key")
    box_key = property(lambda self: self.root / "box.key")
    tls_key = property(lambda self: self.root / "tls.key")
    client_cert = property(lambda self: self.root / "client.pem")
    ca = property(lambda self: self.root / "ca.pem")
    ledger_key = property(lambda self: self.root / "ledger.key")
    hub_json = property(lambda self: self.root / "hub.json")

    @property
    def joined(self) -> bool:
        return self.hub_json.exists()

    def hub(self) -> dict[str, Any]:
        """hub.json: ``hub_url``, ``site_id`` and this site's public keys."""
        try:
            data: dict[str, Any] = json.loads(self.hub_json.read_text())
        except FileNotFoundError:
            raise NotFound(
                f"{self.root}: this site has not joined a hub: run `jip fed join HUB_URL --token T`"
            ) from None
        return data

    def ssl_context(self) -> ssl.SSLContext:
        """TLS towards the hub: only its pinned CA, and this site's client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.tls_key))
        return context

    def ledger_secret(self) -> bytes:
        """The released-cohort ledger's HMAC key, made on first use."""
        if not self.ledger_key.exists():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(self.ledger_key, encode_key(secrets.token_bytes(32)).encode())
        return decode_bytes(self.ledger_key.read_text().strip(), "ledger.key", 32)

    def box_private(self) -> bytes:
        return decode_bytes(self.box_key.read_text().strip(), "box.key", 32)


def _csr(name: str) -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _enrol_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """How enrolment checks the hub: the CA file given out of band, else the system's
    trust store. Never unverified: the token must not go to whoever answers."""
    if ca_file is None:
        return True
    if not ca_file.is_file():
        raise Invalid(f"--ca {ca_file}: no such file (the hub's ca.pem, copied from the hub)")
    return ssl.create_default_context(cafile=str(ca_file))


def join(
    files: SiteFiles,
    hub_url: str,
    token: str,
    *,
    name: str | None = None,
    ca_file: Path | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Make this site's keys, enrol with the hub by its one-time ``token`` and keep what
    it answers (certificate, CA, site id); returns hub.json. Conflict if already joined."""
    if files.joined:
        raise Conflict(f"{files.root}: this site has joined {files.hub()['hub_url']} already")
    if not hub_url.startswith("https://"):
        raise Invalid(f"hub URL {hub_url}: must be https://")
    identity, box = generate_signing_keys(), generate_box_keys()
    # The hub's tokens read ``<site_id>.<secret>`` and the CSR must name that site id.
    tls_key, csr_pem = _csr(name or token.partition(".")[0] or "jip-site")
    body = {
        "token": token,
        "csr_pem": csr_pem,
        "identity_key": encode_key(identity.public),
        "box_key": encode_key(box.public),
    }
    url = hub_url.rstrip("/")
    try:
        with httpx.Client(
            verify=_enrol_verify(ca_file), timeout=ENROL_TIMEOUT_S, transport=transport
        ) as client:
            response = client.post(f"{url}/api/enrol", json=body)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"cannot reach the hub at {url}: {exc} (with a hub's own CA, pass --ca ca.pem)"
        ) from exc
    if response.status_code in (401, 403):
        raise Forbidden(f"the hub refused the enrolment: {detail_of(response)}")
    if response.status_code >= 400:
        raise Invalid(f"enrolment failed: {detail_of(response)} (HTTP {response.status_code})")
    answer = response.json()
    site_id, cert_pem, ca_pem = answer["site_id"], answer["certificate_pem"], answer["ca_pem"]
    if ca_file is not None and x509.load_pem_x509_certificate(
        ca_pem.encode()
    ) != x509.load_pem_x509_certificate(ca_file.read_bytes()):
        raise Forbidden("the hub answered with another CA than the one given with --ca")
    files.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.root.chmod(0o700)
    write_private(files.identity_key, encode_key(identity.private).encode())
    write_private(files.box_key, encode_key(box.private).encode())
    write_private(files.tls_key, tls_key)
    write_private(files.client_cert, cert_pem.encode())
    write_private(files.ca, ca_pem.encode())
    files.ledger_secret()
    hub = {
        "hub_url": url,
        "site_id": site_id,
        "identity_key": encode_key(identity.public),
        "box_key": encode_key(box.public),
    }
    write_private(files.hub_json, json.dumps(hub, indent=2).encode())
    return hub
