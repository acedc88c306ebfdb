"""The diffusion b-value of an instance, wherever its scanner wrote it.

An ADC harmonisation cohort is chosen by its b-values (``DiffusionBValues``: a multi-b
series lists its distinct b-values, sorted). The standard place is Diffusion b-value
(0018,9087), at the top level of a classic MR image or in the MR Diffusion functional
group of an enhanced one (PS3.3 C.8.13.5.9); many archives hold DWI from scanners that
wrote it only in their private groups, so three well-known private elements, found by
their private creator (PS3.5 7.8.1) and never by a fixed element number, are read too:
Siemens ``SIEMENS MR HEADER`` (0019,xx0C), GE ``GEMS_PARM_01`` (0043,xx39, the first
value; newer software adds 10⁹) and Philips ``Philips Imaging DD 001`` (2001,xx03). Only
the number is indexed; nothing else of a private group ever is.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

# (group, private creator, element offset, GE's 10⁹ offset applies, VR when unknown)
_PRIVATE = (
    (0x0019, "SIEMENS MR HEADER", 0x0C, False, "IS"),
    (0x0043, "GEMS_PARM_01", 0x39, True, "IS"),
    (0x2001, "Philips Imaging DD 001", 0x03, False, "FL"),
)
_GE_OFFSET = 1_000_000_000
_MAX_B = 100_000.0  # s/mm²: anything larger is not a b-value (a wrong VR, a code)
MAX_FRAMES = 1024


def b_values(dataset: Dataset) -> list[float]:
    """The distinct b-values (s/mm²) of one instance, sorted; [] for a non-diffusion one.

    The standard element wins; a private one is read only where it is absent."""
    found = sorted({b for b in _standard(dataset) if _plausible(b)})
    if found:
        return found
    # private_block scans every element: only for groups present. By tag: iterating a
    # Dataset would decode each of its elements.
    groups = {tag.group for tag in dataset.keys()}  # noqa: SIM118
    for group, creator, offset, ge, vr in _PRIVATE:
        value = _private(dataset, group, creator, offset, vr) if group in groups else None
        if value is None:
            continue
        if ge and value >= _GE_OFFSET:
            value %= _GE_OFFSET
        if _plausible(value):
            return [value]
    return []


def _standard(dataset: Dataset) -> Iterator[float]:
    value = _number(dataset.get("DiffusionBValue"))
    if value is not None:
        yield value
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = dataset.get(groups)
        if not isinstance(items, Sequence):
            continue
        for frame in list(items)[:MAX_FRAMES]:
            diffusion = frame.get("MRDiffusionSequence")
            if isinstance(diffusion, Sequence) and len(diffusion):
                value = _number(diffusion[0].get("DiffusionBValue"))
                if value is not None:
                    yield value


def _private(dataset: Dataset, group: int, creator: str, offset: int, vr: str) -> float | None:
    try:
        block = dataset.private_block(group, creator)
    except KeyError:
        return None
    if offset not in block:
        return None
    value = block[offset].value
    if isinstance(value, bytes) and vr == "FL":  # read without its VR (implicit VR LE)
        return _number(struct.unpack("<f", value[:4])[0]) if len(value) >= 4 else None
    return _number(value)


def _number(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if isinstance(value, bytes):  # a text element read without its VR (implicit VR)
        value = value.decode("ascii", "replace").strip(" \x00").split("\\")[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plausible(value: float) -> bool:
    return 0.0 <= value <= _MAX_B
