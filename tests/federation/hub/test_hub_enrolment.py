"""Enrolment and the site routes' mutual TLS, against the hub served over HTTPS."""

from __future__ import annotations

import datetime as dt
import socket
import ssl

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.federation.hub.support import RunningHub, csr_for, enrol_body

from jip.errors import Conflict
from jip.federation.hub import add_site, list_sites


def test_enrolment_issues_a_client_certificate_for_the_site_from_the_hub_ca(
    running_hub: RunningHub,
) -> None:
    enrolment = add_site(running_hub.hub, "alpha")
    assert enrolment.token.startswith("alpha.")
    csr_pem, _ = csr_for("alpha")
    with running_hub.anonymous() as client:
        answer = client.post("/api/enrol", json=enrol_body(enrolment.token, csr_pem))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    ca = x509.load_pem_x509_certificate(body["ca_pem"].encode())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alpha"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert ca == x509.load_pem_x509_certificate(running_hub.hub.paths.ca_cert.read_bytes())
    (site,) = list_sites(running_hub.hub)
    assert site["enrolled"] and site["box_key"]


def test_a_used_enrolment_token_is_refused(running_hub: RunningHub) -> None:
    token = add_site(running_hub.hub, "alpha").token
    with running_hub.anonymous() as client:
        first = client.post("/api/enrol", json=enrol_body(token, csr_for("alpha")[0]))
        second = client.post("/api/enrol", json=enrol_body(token, csr_for("alpha")[0]))
    assert first.status_code == 200
    assert second.status_code == 403
    assert "enrolment token" in second.json()["detail"]


def test_a_wrong_or_expired_enrolment_token_is_refused(running_hub: RunningHub) -> None:
    token = add_site(running_hub.hub, "alpha").token
    with running_hub.anonymous() as client:
        wrong = client.post("/api/enrol", json=enrol_body(token + "x", csr_for("alpha")[0]))
        running_hub.clock.advance(dt.timedelta(hours=25))
        expired = client.post("/api/enrol", json=enrol_body(token, csr_for("alpha")[0]))
    assert (wrong.status_code, expired.status_code) == (403, 403)


def test_a_csr_for_another_site_is_refused_and_leaves_the_token_usable(
    running_hub: RunningHub,
) -> None:
    token = add_site(running_hub.hub, "alpha").token
    add_site(running_hub.hub, "beta")
    with running_hub.anonymous() as client:
        other = client.post("/api/enrol", json=enrol_body(token, csr_for("beta")[0]))
        right = client.post("/api/enrol", json=enrol_body(token, csr_for("alpha")[0]))
    assert other.status_code == 400
    assert "CN must be the site id 'alpha'" in other.json()["detail"]
    assert right.status_code == 200


def test_site_routes_without_a_client_certificate_are_401(running_hub: RunningHub) -> None:
    with running_hub.anonymous() as client:
        for method, path in [
            ("GET", "/api/site/jobs"),
            ("POST", "/api/site/jobs/" + "0" * 32 + "/ack"),
            ("POST", "/api/site/jobs/" + "0" * 32 + "/results"),
        ]:
            answer = client.request(method, path, json={})
            assert answer.status_code == 401, (path, answer.text)


def test_a_researcher_token_does_not_open_site_routes(running_hub: RunningHub) -> None:
    with running_hub.researcher() as client:
        assert client.get("/api/site/jobs").status_code == 401


def test_a_certificate_from_another_ca_is_refused_in_the_handshake(
    running_hub: RunningHub,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alpha")])
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = running_hub.tmp / "forged.pem", running_hub.tmp / "forged.key"
    cert_path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    add_site(running_hub.hub, "alpha")
    context = ssl.create_default_context(cafile=running_hub.ca)
    context.load_cert_chain(cert_path, key_path)
    with (
        httpx.Client(base_url=running_hub.url, verify=context) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get("/api/site/jobs").raise_for_status()


def test_a_replaced_certificate_no_longer_opens_site_routes(running_hub: RunningHub) -> None:
    old = running_hub.enrol("alpha")
    assert old.get("/api/site/jobs").status_code == 200
    with pytest.raises(Conflict, match="already enrolled"):
        add_site(running_hub.hub, "alpha")
    assert old.get("/api/site/jobs").status_code == 200  # until the site enrols anew
    new = running_hub.enrol("alpha", replace=True)  # the site lost its keys
    refused = old.get("/api/site/jobs")
    assert refused.status_code == 403
    assert "replaced or revoked" in refused.json()["detail"]
    assert new.get("/api/site/jobs").status_code == 200
    old.close()
    new.close()


def test_an_oversized_enrolment_body_is_refused_before_it_is_read(
    running_hub: RunningHub,
) -> None:
    port = int(running_hub.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=running_hub.ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(  # says 64 MiB, sends none of it: the answer must not wait for it
            b"POST /api/enrol HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
            b"Content-Length: 67108864\r\n\r\n"
        )
        status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
