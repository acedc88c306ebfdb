"""Helpers for the hub tests: clients of a hub served for real (HTTPS, its CA), sites
enrolled the way a site agent does it (its own key, a CSR with its id as CN, POST
/api/enrol), researchers with bearer tokens, and job specs.

The hub's clock is a :class:`MovableClock`, so deadline tests move time forward instead
of sleeping.
"""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jip.federation import (
    BoxKeyPair,
    CohortDocument,
    DeclaredOutput,
    JobSpec,
    OutputKind,
    WorkflowRef,
    encode_key,
    generate_box_keys,
    generate_signing_keys,
    sign_workflow,
)
from jip.federation.hub import Hub, add_site

DIGEST = "sha256:" + "ab" * 32


class MovableClock:
    """UTC now, plus however far a test has moved it."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


def csr_for(common_name: str) -> tuple[str, bytes]:
    """A site's TLS key (PEM) and its CSR (PEM) with ``common_name`` as CN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii"), key_pem


def enrol_body(token: str, csr_pem: str, box: BoxKeyPair | None = None) -> dict[str, str]:
    return {
        "token": token,
        "csr_pem": csr_pem,
        "identity_key": encode_key(generate_signing_keys().public),
        "box_key": encode_key((box or generate_box_keys()).public),
    }


@dataclass
class RunningHub:
    url: str
    hub: Hub
    clock: MovableClock
    tmp: Path
    researcher_token: str
    researcher_keys: BoxKeyPair = field(default_factory=generate_box_keys)
    clients: list[httpx.Client] = field(default_factory=list)
    site_boxes: dict[str, BoxKeyPair] = field(default_factory=dict)  # later rounds open

    def close(self) -> None:
        for client in self.clients:
            client.close()

    @property
    def ca(self) -> str:
        return str(self.hub.paths.ca_cert)

    def anonymous(self) -> httpx.Client:
        """HTTPS to the hub, verified against its CA, with no client certificate."""
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca))

    def researcher(self, token: str | None = None) -> httpx.Client:
        client = self.anonymous()
        client.headers["Authorization"] = f"Bearer {token or self.researcher_token}"
        return client

    def enrol(self, name: str, *, replace: bool = False) -> httpx.Client:
        """Enrol site ``name`` as a site agent does; a client with its certificate."""
        token = add_site(self.hub, name, replace=replace).token
        csr_pem, key_pem = csr_for(name)
        self.site_boxes[name] = generate_box_keys()
        with self.anonymous() as client:
            answer = client.post(
                "/api/enrol", json=enrol_body(token, csr_pem, self.site_boxes[name])
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["site_id"] == name
        cert_path, key_path = self.tmp / f"{name}.pem", self.tmp / f"{name}.key"
        cert_path.write_text(body["certificate_pem"])
        key_path.write_bytes(key_pem)
        (self.tmp / f"{name}-ca.pem").write_text(body["ca_pem"])
        context = ssl.create_default_context(cafile=str(self.tmp / f"{name}-ca.pem"))  # pinned
        context.load_cert_chain(cert_path, key_path)
        client = httpx.Client(base_url=self.url, verify=context, timeout=60)
        self.clients.append(client)
        return client

    def job(self, *, min_sites: int = 1, deadline_in: dt.timedelta | None = None) -> JobSpec:
        publisher = generate_signing_keys()
        signature = sign_workflow("fed-stats", DIGEST, publisher.private)
        return JobSpec(
            id=uuid.uuid4().hex,
            project="harmonisation",
            researcher_key=encode_key(self.researcher_keys.public),
            workflow=WorkflowRef(
                name="fed-stats",
                image_digest=DIGEST,
                signature=encode_key(signature),
                signer=encode_key(publisher.public),
            ),
            cohort=CohortDocument(format="jip.cohort", format_version=1, name="prostate-dwi"),
            outputs=(DeclaredOutput(name="n", kind=OutputKind.COUNT, field="adc"),),
            min_sites=min_sites,
            deadline=self.clock() + (deadline_in or dt.timedelta(hours=1)),
        )

    def submit(self, spec: JobSpec) -> str:
        with self.researcher() as client:
            answer = client.post("/api/jobs", json=spec.model_dump(mode="json"))
        assert answer.status_code == 200, answer.text
        job_id: str = answer.json()["id"]
        return job_id
