"""DICOM JSON (PS3.18 Annex F) of a stored header, which no stored value can break.

Stored instances are whatever a modality sent: an Integer String ``1A``, a Decimal
String ``NaN``, a US value three bytes long, a sequence whose items do not parse. One
such element must not fail a whole metadata or search response (every study list of a
web viewer asks for it), so each element is converted on its own: an IS or DS value
that is no number is returned as stored (a string), a value JSON cannot hold as a
number (NaN, infinity) as its text, and an element that cannot be read at all is left
out. Each such element is logged as a warning, with its tag and never its value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

log = logging.getLogger(__name__)
BulkUri = Callable[[DataElement], str]
JsonObject = dict[str, Any]
_NUMBER_STRINGS = {"IS": int, "DS": float}
_TEXT_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT")
)


def dataset_json(
    dataset: Dataset, bulk_threshold: int, bulk_uri: BulkUri, skip: frozenset[int] = frozenset()
) -> JsonObject:
    """``dataset`` as DICOM JSON, element by element; tags in ``skip`` are left out."""
    result: JsonObject = {}
    for tag in sorted(dataset.keys()):
        if int(tag) in skip:
            continue
        key = f"{int(tag):08X}"
        try:
            element = dataset[tag]  # a raw element is converted here
        except Exception as exc:
            _warn(key, "left out: cannot be read", exc)
            continue
        converted = element_json(element, key, bulk_threshold, bulk_uri)
        if converted is not None:
            result[key] = converted
    return result


def element_json(
    element: DataElement, key: str, bulk_threshold: int, bulk_uri: BulkUri
) -> JsonObject | None:
    """One element as DICOM JSON; None where it cannot be represented (logged)."""
    if element.VR == "SQ":
        try:
            items = list(element.value or [])
        except Exception as exc:
            _warn(key, "left out: sequence cannot be read", exc)
            return None
        values = [dataset_json(item, bulk_threshold, bulk_uri) for item in items]
        return {"vr": "SQ", "Value": values} if values else {"vr": "SQ"}
    try:
        converted: JsonObject = element.to_json_dict(bulk_uri, bulk_threshold)
    except Exception as exc:
        fallback = _as_stored(element)
        _warn(key, "returned as stored" if fallback else "left out", exc)
        return fallback
    numbers: list[Any] = converted.get("Value") or []
    if numbers and any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        if element.VR == "DS":  # "NaN" as stored
            return _as_stored(element)
        converted["Value"] = [_finite(v) for v in numbers]
    return converted


def _as_stored(element: DataElement) -> JsonObject | None:
    """Number strings as numbers where they are, else as their text; other text VRs
    as their text; anything else None."""
    vr = str(element.VR)
    if vr not in _NUMBER_STRINGS and vr not in _TEXT_VRS:
        return None
    raw = element.value
    values = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    out: list[Any] = []
    for value in values:
        if value is None or value == "":
            out.append(None)
            continue
        text = str(value).strip(" \x00")
        parse = _NUMBER_STRINGS.get(vr)
        if parse is not None:
            try:
                number = parse(text)
            except (TypeError, ValueError, OverflowError):
                number = None
            if number is not None and math.isfinite(number):
                out.append(number)
                continue
        out.append(text)
    return {"vr": vr, "Value": out} if any(v is not None for v in out) else {"vr": vr}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number goes out as its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _warn(key: str, what: str, exc: BaseException) -> None:
    log.warning(
        "invalid DICOM element %s %s", key, what, extra={"tag": key, "error": type(exc).__name__}
    )
