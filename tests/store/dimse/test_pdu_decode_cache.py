"""The fast path decodes and negotiates each distinct A-ASSOCIATE-RQ once.

A sender's associations propose the same presentation contexts each time; decoding
storescu's ~120 of them through pynetdicom, and negotiating them, costs milliseconds
of CPU per association.
"""

from __future__ import annotations

import pytest
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext, StoragePresentationContexts
from tests.store.dimse.support import request_pdu

from jip.store.dimse.pdu import Offer, accept_pdu, decode_request

SYNTAXES = frozenset({"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"})
ABSTRACTS = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]


def _request(calling: str, contexts: int) -> bytes:
    return request_pdu(ABSTRACTS[0], calling=calling, also=ABSTRACTS[1:contexts])


def test_the_same_request_is_decoded_once_and_others_on_their_own() -> None:
    raw = _request("SENDER", 100)
    first = decode_request(raw)
    assert decode_request(bytearray(raw)) is first  # as the fast path reads it
    assert str(first.calling_ae_title).strip() == "SENDER"
    assert len(first.presentation_context_definition_list) == 100
    other = decode_request(_request("OTHER", 3))
    assert other is not first
    assert str(other.calling_ae_title).strip() == "OTHER"
    assert len(other.presentation_context_definition_list) == 3


def test_a_repeated_request_is_accepted_without_negotiating_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offer = Offer(dict.fromkeys(ABSTRACTS, SYNTAXES), frozenset())
    request = decode_request(_request("SENDER", 50))
    contexts, pdu = offer.accept(request, 16384)
    assert pdu == accept_pdu(request, contexts, 16384)
    assert len(contexts) == 50 and all(cx.result == 0x00 for cx in contexts)
    negotiated: list[object] = []
    real = Offer.negotiate

    def negotiate(self: Offer, request: A_ASSOCIATE) -> list[PresentationContext]:
        negotiated.append(request)
        return real(self, request)

    monkeypatch.setattr(Offer, "negotiate", negotiate)
    assert offer.accept(decode_request(_request("SENDER", 50)), 16384) == (contexts, pdu)
    assert negotiated == []
    # Another maximum PDU length is another answer.
    other_contexts, other_pdu = offer.accept(request, 32768)
    assert negotiated == [request] and other_pdu != pdu
    assert other_pdu == accept_pdu(request, other_contexts, 32768)
