"""The keys, seals and signatures of federation (PyNaCl, i.e. libsodium).

- **Results are sealed** to the requesting researcher's X25519 public key (libsodium
  sealed boxes: an ephemeral sender key, X25519 + XSalsa20-Poly1305). The hub relays
  ciphertext it cannot read; a flipped bit fails authentication on opening.
- **Workflows and bundles are signed** with Ed25519. A site runs a workflow only when
  its image digest carries a signature by a key the site trusts; jobs and results carried
  by hand travel as signed bundles.

What is signed is never "some JSON" but :func:`canonical_json` bytes (sorted keys, no
whitespace, UTF-8, no NaN) behind a purpose label, so that the same object always gives
the same bytes and a signature made for one purpose (a workflow) cannot be replayed as
another (a bundle).

Keys travel as base64 text (:func:`encode_key`); :func:`key_id` is the short fingerprint
sites list their trusted keys by.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from jip.errors import Forbidden, Invalid

WORKFLOW_PURPOSE = "jip.federation.workflow.v1"
BUNDLE_PURPOSE = "jip.federation.bundle.v1"
KEY_BYTES = 32


def encode_key(raw: bytes) -> str:
    """A key (or signature) as standard base64 text."""
    return base64.b64encode(raw).decode("ascii")


def decode_bytes(text: str, what: str, length: int | None = None) -> bytes:
    """Base64 text back to bytes; Invalid naming ``what`` when malformed or of the wrong
    length (a key is 32 bytes, a signature 64)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise Invalid(f"{what}: expected base64 text") from exc
    if length is not None and len(raw) != length:
        raise Invalid(f"{what}: expected {length} bytes, got {len(raw)}")
    return raw


def key_id(public_key: bytes) -> str:
    """The fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def canonical_json(document: object) -> bytes:
    """The one byte form of a JSON document: sorted keys, no whitespace, UTF-8; NaN and
    infinity are refused (JSON has no such numbers, and two encoders disagree on them)."""
    try:
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise Invalid(f"not canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def _labelled(purpose: str, document: object) -> bytes:
    return purpose.encode("ascii") + b"\x00" + canonical_json(document)


# -- sealed results -----------------------------------------------------------------------
@dataclass(frozen=True)
class BoxKeyPair:
    """A researcher's X25519 key pair: results are sealed to ``public``."""

    public: bytes
    private: bytes = b""

    def __repr__(self) -> str:  # never print the private half
        return f"BoxKeyPair(public={encode_key(self.public)!r}, private=<hidden>)"


def generate_box_keys() -> BoxKeyPair:
    """A fresh X25519 key pair (from the operating system's randomness)."""
    private = PrivateKey.generate()
    return BoxKeyPair(bytes(private.public_key), bytes(private))


def seal(plaintext: bytes, public_key: bytes) -> bytes:
    """Encrypt to the holder of ``public_key``; only their private key opens it."""
    if len(public_key) != KEY_BYTES:
        raise Invalid(f"public key: expected {KEY_BYTES} bytes, got {len(public_key)}")
    return bytes(SealedBox(PublicKey(public_key)).encrypt(plaintext))


def unseal(ciphertext: bytes, private_key: bytes) -> bytes:
    """Decrypt a sealed box; Forbidden when it was not sealed to this key or was altered
    (the authenticator fails either way, and the two must not be told apart)."""
    if len(private_key) != KEY_BYTES:
        raise Invalid(f"private key: expected {KEY_BYTES} bytes, got {len(private_key)}")
    try:
        return bytes(SealedBox(PrivateKey(private_key)).decrypt(ciphertext))
    except CryptoError as exc:
        raise Forbidden(
            "sealed result: cannot be opened with this key (sealed to another key, or altered)"
        ) from exc


# -- signatures ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningKeyPair:
    """An Ed25519 key pair: a workflow publisher's, or a site's identity."""

    public: bytes
    private: bytes = b""

    def __repr__(self) -> str:
        return f"SigningKeyPair(public={encode_key(self.public)!r}, private=<hidden>)"


def generate_signing_keys() -> SigningKeyPair:
    """A fresh Ed25519 key pair."""
    private = SigningKey.generate()
    return SigningKeyPair(bytes(private.verify_key), bytes(private))


def sign(message: bytes, private_key: bytes) -> bytes:
    """The detached 64-byte Ed25519 signature of ``message``."""
    if len(private_key) != KEY_BYTES:
        raise Invalid(f"signing key: expected {KEY_BYTES} bytes, got {len(private_key)}")
    return bytes(SigningKey(private_key).sign(message).signature)


def verify(message: bytes, signature: bytes, public_key: bytes) -> None:
    """Returns when ``signature`` is ``public_key``'s over ``message``; Forbidden
    otherwise (a tampered message, a tampered signature or another key)."""
    if len(public_key) != KEY_BYTES:
        raise Invalid(f"verify key: expected {KEY_BYTES} bytes, got {len(public_key)}")
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise Forbidden(f"signature: not valid for key {key_id(public_key)}") from exc


def workflow_message(name: str, image_digest: str) -> bytes:
    """The bytes a workflow signature covers: its name and its image's digest."""
    return _labelled(WORKFLOW_PURPOSE, {"name": name, "image_digest": image_digest})


def sign_workflow(name: str, image_digest: str, private_key: bytes) -> bytes:
    """A publisher signs a workflow's image digest (what sites' policies trust)."""
    return sign(workflow_message(name, image_digest), private_key)


def verify_workflow(name: str, image_digest: str, signature: bytes, public_key: bytes) -> None:
    """Forbidden unless ``signature`` is ``public_key``'s over this name and digest."""
    verify(workflow_message(name, image_digest), signature, public_key)


def bundle_message(document: Mapping[str, object]) -> bytes:
    """The bytes a bundle signature covers: the canonical JSON of the whole document."""
    return _labelled(BUNDLE_PURPOSE, document)


def sign_bundle(document: Mapping[str, object], private_key: bytes) -> bytes:
    """Sign a job or result bundle (carried by hand to or from a site)."""
    return sign(bundle_message(document), private_key)


def verify_bundle(document: Mapping[str, object], signature: bytes, public_key: bytes) -> None:
    """Forbidden unless the bundle is unchanged since ``public_key``'s holder signed it."""
    verify(bundle_message(document), signature, public_key)
