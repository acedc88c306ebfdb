"""A minimal hub that speaks the site half of the hub<->site contract, over real HTTPS
with mutual TLS (a test CA made here), so the site agent's tests do not wait for the
real hub. It records what sites send, and can fail, forget acks or sit idle on demand.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, HTTPException, Request, Response
from tests.support.network import free_port
from uvicorn.protocols.http.h11_impl import H11Protocol

from jip.federation import JobSpec, RoundRequest, SiteJobStatus, SiteResult


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    public_key: Any,
    issuer: x509.Name,
    signer: Any,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


class TestCA:
    """A CA, and certificates it signs."""

    __test__ = False

    def __init__(self, name: str = "fake hub CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = _cert(name, self.key.public_key(), self.name, self.key, ca=True)
        self.pem = _pem(self.cert)

    def server(self, directory: Path) -> tuple[Path, Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        import ipaddress

        san: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = _cert("localhost", key.public_key(), self.name, self.key, san=san)
        paths = directory / "server.pem", directory / "server.key", directory / "ca.pem"
        paths[0].write_text(_pem(cert))
        paths[1].write_bytes(_key_pem(key))
        paths[2].write_text(self.pem)
        return paths

    def sign_csr(self, csr_pem: str, site_id: str) -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        return _pem(_cert(site_id, csr.public_key(), self.name, self.key))


class _PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, with the verified client certificate in the ASGI scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"peer": peer}
            await inner(scope, receive, send)

        self.app = app


def _cn(request: Request) -> str:
    peer = request.scope.get("extensions", {}).get("tls", {}).get("peer")
    if not peer:
        raise HTTPException(401, "a client certificate is required")
    for rdn in peer["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise HTTPException(401, "no CN")


@dataclass
class FakeHub:
    ca: TestCA
    tokens: set[str] = field(default_factory=set)
    sites: list[str] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)
    rounds: list[RoundRequest] = field(default_factory=list)
    acked: dict[str, set[str]] = field(default_factory=dict)
    states: list[SiteJobStatus] = field(default_factory=list)
    results: dict[tuple[str, str, int], SiteResult] = field(default_factory=dict)
    fail_next: int = 0  # answer 503 to this many site requests
    lose_acks: bool = False  # answer 204 to acks and forget them
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def failures(request: Request, call_next: Any) -> Any:
            self.requests.append(f"{request.method} {request.url.path}")
            if request.url.path.startswith("/api/site/") and self.fail_next > 0:
                self.fail_next -= 1
                return Response(status_code=503)
            return await call_next(request)

        @app.post("/api/enrol")
        def enrol(body: dict[str, Any]) -> dict[str, str]:
            if body.get("token") not in self.tokens:
                raise HTTPException(403, "unknown or used enrolment token")
            self.tokens.discard(body["token"])
            site_id = f"site{len(self.sites) + 1}"
            self.sites.append(site_id)
            certificate = self.ca.sign_csr(body["csr_pem"], site_id)
            return {"site_id": site_id, "certificate_pem": certificate, "ca_pem": self.ca.pem}

        @app.get("/api/site/jobs")
        def site_jobs(request: Request, wait: int = 0) -> dict[str, Any]:
            site = _cn(request)
            seen = self.acked.setdefault(site, set())
            jobs = [j.model_dump(mode="json") for j in self.jobs if j.id not in seen]
            rounds = [
                r.model_dump(mode="json")
                for r in self.rounds
                if f"{r.job_id}/{r.round}" not in seen
            ]
            return {"jobs": jobs, "rounds": rounds}

        @app.post("/api/site/jobs/{job_id}/ack", status_code=204)
        def ack(request: Request, job_id: str, round: int = 1) -> None:
            site = _cn(request)
            if not self.lose_acks:
                self.acked.setdefault(site, set()).add(
                    job_id if round == 1 else f"{job_id}/{round}"
                )

        @app.post("/api/site/jobs/{job_id}/state", status_code=204)
        def state(request: Request, job_id: str, body: SiteJobStatus) -> None:
            if body.site_id != _cn(request) or body.job_id != job_id:
                raise HTTPException(403, "not this site's job")
            self.states.append(body)

        @app.post("/api/site/jobs/{job_id}/results", status_code=204)
        def results(request: Request, job_id: str, body: SiteResult) -> None:
            if body.site_id != _cn(request) or body.job_id != job_id:
                raise HTTPException(403, "not this site's job")
            key = (job_id, body.site_id, body.round)
            if key in self.results and self.results[key] != body:
                raise HTTPException(409, "a different result for this round")
            self.results[key] = body

        return app

    def state_of(self, job_id: str) -> str | None:
        found = [s.state.value for s in self.states if s.job_id == job_id]
        return found[-1] if found else None


@contextmanager
def running_hub(directory: Path) -> Iterator[FakeHub]:
    """A fake hub on HTTPS (mutual TLS optional at the socket, required by site routes)."""
    ca = TestCA()
    hub = FakeHub(ca)
    cert, key, ca_file = ca.server(directory)
    port = free_port()
    config = uvicorn.Config(
        hub.app(),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_ca_certs=str(ca_file),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        http=_PeerCertProtocol,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake hub did not start")
        time.sleep(0.02)
    hub.url = f"https://127.0.0.1:{port}"
    try:
        yield hub
    finally:
        server.should_exit = server.force_exit = True
        thread.join(timeout=30)
