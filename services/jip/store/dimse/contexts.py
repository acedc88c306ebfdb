"""The SOP classes and transfer syntaxes our AE speaks, and the contexts it proposes.

The bottom of :mod:`jip.store.dimse`: the AE (:mod:`.ae`), the fast path's negotiation
(:mod:`.pdu`), the handlers and the SCU all name the same abstract syntaxes, so they
are defined once here, where nothing else of the package is imported.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_context

# Verification SOP Class (PS3.4 Annex A).
VERIFICATION = "1.2.840.10008.1.1"


class QueryRetrieveModel(enum.StrEnum):
    """Patient Root and Study Root information models (PS3.4 C.6.1, C.6.2), by SOP class."""

    PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
    PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
    PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
    STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
    STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
    STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

    @property
    def is_patient_root(self) -> bool:
        return self.value.startswith("1.2.840.10008.5.1.4.1.2.1.")


# Our preference where the requestor's order does not decide (see
# jip.store.dimse.transport.on_association_requested): lossless first, so that we never
# ask for lossy compression; Explicit VR Little Endian first of all because it keeps the VRs.
_LOSSLESS = [
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
STORAGE_TRANSFER_SYNTAXES: list[UID] = _LOSSLESS + [
    uid for uid in AllTransferSyntaxes if uid not in _LOSSLESS
]
UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian}


def requested_contexts(pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """Presentation contexts to send instances of the (SOP class, transfer syntax) pairs.

    One context per pair, so that the peer can accept each syntax separately; an
    uncompressed syntax also offers the other uncompressed ones as fallback. PS3.8
    §9.3.2.2 allows at most 128 contexts per association.
    """
    contexts = []
    for sop_class, syntax in dict.fromkeys(pairs):
        offered = [syntax]
        if syntax in UNCOMPRESSED:
            offered += [
                ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts != syntax
            ]
        contexts.append(build_context(sop_class, offered))
    return contexts[:128]
