"""The hub's certificate authority: the CA itself, the hub's server certificate and the
client certificates sites get at enrolment (python ``cryptography``, ECDSA P-256).

Sites are known by their client certificate: the CN is the site id, the CA is this hub's
own (never a public one), and the hub keeps the SHA-256 of the certificate it issued last
to each site, so a site that enrols again replaces its old certificate. Sites pin the CA
they get at enrolment; nobody else's CA can vouch for this hub or for a site.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jip.errors import Forbidden, Invalid

CA_YEARS = 10
SERVER_YEARS = 5
SITE_YEARS = 2
CA_NAME = "JIP federation hub CA"
MIN_RSA_BITS = 2048
MAX_CSR_BYTES = 16 * 1024


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _years(years: int) -> dt.timedelta:
    return dt.timedelta(days=365 * years)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, hex (what the hub keeps per site)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(cert: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


@dataclass(frozen=True)
class Authority:
    """The CA's certificate and key, loaded from the hub's data dir."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return cert_pem(self.cert)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise Invalid(f"{key_path}: the hub CA key must be an EC key")
        return cls(cert, key)

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
        years: int,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + _years(years), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(self, hosts: list[str]) -> tuple[x509.Certificate, bytes]:
        """The hub's TLS certificate (SAN: localhost, 127.0.0.1 and ``hosts``) and key PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in ["localhost", "127.0.0.1", *hosts]:
            try:
                entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
            except ValueError:
                entry = x509.DNSName(host)
            if entry not in names:
                names.append(entry)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hosts or ["localhost"])[0])])
        cert = self._issue(
            subject, key.public_key(), SERVER_YEARS, ExtendedKeyUsageOID.SERVER_AUTH, names
        )
        return cert, _key_pem(key)

    def issue_site(self, csr_pem: str, site_id: str) -> x509.Certificate:
        """A client certificate for ``site_id`` from its CSR; Invalid unless the CSR is
        well formed, signed by its own key, and its CN is exactly ``site_id``."""
        if len(csr_pem) > MAX_CSR_BYTES:
            raise Invalid(f"csr_pem: longer than {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise Invalid("csr_pem: not a PEM certificate signing request") from exc
        if not csr.is_signature_valid:
            raise Invalid("csr_pem: the CSR's signature does not match its key")
        if common_name(csr) != site_id:
            raise Invalid(
                f"csr_pem: the CSR's CN must be the site id {site_id!r} "
                "(the part of the enrolment token before the '.')"
            )
        public_key = csr.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.key_size < 256:
                raise Invalid("csr_pem: an EC key needs a curve of 256 bits or more")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < MIN_RSA_BITS:
                raise Invalid(f"csr_pem: an RSA key needs {MIN_RSA_BITS} bits or more")
        elif not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise Invalid("csr_pem: the key must be EC (P-256 or larger), RSA or Ed25519")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id)])
        return self._issue(subject, public_key, SITE_YEARS, ExtendedKeyUsageOID.CLIENT_AUTH)

    def check_site_cert(self, pem: str) -> x509.Certificate:
        """The client certificate TLS presented, checked again here (issued by this CA,
        for client authentication, in its validity period); Forbidden otherwise."""
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise Forbidden("client certificate: not issued by this hub's CA") from exc
        now = _now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Forbidden("client certificate: expired or not yet valid; enrol again")
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as exc:
            raise Forbidden("client certificate: not issued for client authentication") from exc
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise Forbidden("client certificate: not issued for client authentication")
        return cert


def make_authority(hosts: list[str]) -> tuple[Authority, bytes, x509.Certificate, bytes]:
    """A new CA (ECDSA P-256, ten years) and the hub's server certificate: the CA, the
    CA key PEM, the server certificate and the server key PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _years(CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    authority = Authority(cert, key)
    server_cert, server_key = authority.issue_server(hosts)
    return authority, _key_pem(key), server_cert, server_key
