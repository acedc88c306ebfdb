"""The embedded issuer's RS256 key pair, generated once and kept under ``<data_dir>/keys``.

The private key is a PKCS#8 PEM file readable by its owner only (0600, in a 0700
directory). Several processes may start at once: each writes a candidate to a temporary
file and hard-links it into place, so exactly one key wins and all of them use it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_FILE = "issuer-rs256.pem"
KEY_BITS = 2048


class SigningKeys:
    """Loads (or first creates) the key on first use, so importing costs nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._private: rsa.RSAPrivateKey | None = None
        self._kid = ""

    @property
    def path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._private is None:
                self._private = _load_or_create(self.path)
                self._kid = _thumbprint(self.public_jwk_of(self._private))
            return self._private

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        self.private_key  # noqa: B018  (loads the key, which sets the kid)
        return self._kid

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of the issuer (RFC 7517 §5)."""
        jwk = self.public_jwk_of(self.private_key)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    @staticmethod
    def public_jwk_of(key: rsa.RSAPrivateKey) -> dict[str, str]:
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}


def _load_or_create(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        _create(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}`"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(candidate, path)  # atomic: the key file appears whole or not at all
    finally:
        candidate.unlink(missing_ok=True)


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _thumbprint(jwk: dict[str, str]) -> str:
    """The JWK thumbprint (RFC 7638): SHA-256 of the required members, sorted, no spaces."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    return (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
    )
