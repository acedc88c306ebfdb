"""Sealed results open only with the researcher's key; signatures fail on any change."""

from __future__ import annotations

import pytest

from jip.errors import Forbidden, Invalid
from jip.federation import (
    canonical_json,
    decode_bytes,
    encode_key,
    generate_box_keys,
    generate_signing_keys,
    seal,
    sign,
    sign_bundle,
    sign_workflow,
    unseal,
    verify,
    verify_bundle,
    verify_workflow,
)

DIGEST = "sha256:" + "ab" * 32


def test_a_sealed_box_opens_with_the_private_key() -> None:
    keys = generate_box_keys()
    sealed = seal(b'{"n": 12}', keys.public)
    assert sealed != b'{"n": 12}' and unseal(sealed, keys.private) == b'{"n": 12}'


def test_a_sealed_box_does_not_open_with_another_key() -> None:
    sealed = seal(b"result", generate_box_keys().public)
    with pytest.raises(Forbidden, match="cannot be opened"):
        unseal(sealed, generate_box_keys().private)


def test_a_tampered_ciphertext_is_refused() -> None:
    keys = generate_box_keys()
    sealed = bytearray(seal(b"result", keys.public))
    sealed[-1] ^= 0x01
    with pytest.raises(Forbidden):
        unseal(bytes(sealed), keys.private)


def test_a_workflow_signature_verifies_and_fails_on_any_change() -> None:
    keys = generate_signing_keys()
    signature = sign_workflow("fed-stats", DIGEST, keys.private)
    verify_workflow("fed-stats", DIGEST, signature, keys.public)
    with pytest.raises(Forbidden):
        verify_workflow("fed-stats", "sha256:" + "cd" * 32, signature, keys.public)
    with pytest.raises(Forbidden):
        verify_workflow("other", DIGEST, signature, keys.public)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(Forbidden):
        verify_workflow("fed-stats", DIGEST, tampered, keys.public)
    with pytest.raises(Forbidden, match="not valid for key"):
        verify_workflow("fed-stats", DIGEST, signature, generate_signing_keys().public)


def test_a_bundle_signature_covers_the_canonical_document() -> None:
    keys = generate_signing_keys()
    bundle = {"job": {"id": "a" * 32, "outputs": [1, 2]}, "site": "mannheim"}
    signature = sign_bundle(bundle, keys.private)
    verify_bundle(
        {"site": "mannheim", "job": {"outputs": [1, 2], "id": "a" * 32}}, signature, keys.public
    )
    with pytest.raises(Forbidden):
        verify_bundle({**bundle, "site": "heidelberg"}, signature, keys.public)


def test_a_workflow_signature_is_not_a_bundle_signature() -> None:
    keys = generate_signing_keys()
    document = {"name": "fed-stats", "image_digest": DIGEST}
    with pytest.raises(Forbidden):
        verify_bundle(document, sign_workflow("fed-stats", DIGEST, keys.private), keys.public)
    with pytest.raises(Forbidden):
        verify(
            canonical_json(document), sign_workflow("fed-stats", DIGEST, keys.private), keys.public
        )
    verify(b"plain", sign(b"plain", keys.private), keys.public)


def test_canonical_json_is_one_byte_form_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()
    with pytest.raises(Invalid):
        canonical_json({"x": float("nan")})


def test_keys_travel_as_base64_of_the_right_length() -> None:
    keys = generate_box_keys()
    text = encode_key(keys.public)
    assert decode_bytes(text, "key", 32) == keys.public
    with pytest.raises(Invalid, match="key: expected 32 bytes"):
        decode_bytes(encode_key(b"short"), "key", 32)
    with pytest.raises(Invalid, match="base64"):
        decode_bytes("not base64!", "key")
    assert "private" in repr(keys) and encode_key(keys.private) not in repr(keys)
