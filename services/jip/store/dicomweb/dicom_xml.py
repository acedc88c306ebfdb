"""The Native DICOM Model (PS3.19 Annex A) written from DICOM JSON (PS3.18 Annex F).

pydicom reads and writes DICOM JSON but has no XML writer; QIDO-RS, metadata and STOW
responses offer ``application/dicom+xml`` through this one function.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from pydicom.datadict import keyword_for_tag

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def native_model(dataset_json: dict[str, Any]) -> bytes:
    """One ``<NativeDicomModel>`` document for one dataset in DICOM JSON."""
    root = ET.Element("NativeDicomModel", {"xmlns": NAMESPACE, "xml:space": "preserve"})
    _add_attributes(root, dataset_json)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _add_attributes(parent: ET.Element, dataset_json: dict[str, Any]) -> None:
    for tag in sorted(dataset_json):
        element = dataset_json[tag]
        vr = element.get("vr", "UN")
        attrs = {"tag": tag.upper(), "vr": vr}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attrs["keyword"] = keyword
        creator = _private_creator(dataset_json, tag)
        if creator:
            attrs["privateCreator"] = creator
        node = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in element:
            ET.SubElement(node, "BulkData", {"uri": element["BulkDataURI"]})
        elif "InlineBinary" in element:
            ET.SubElement(node, "InlineBinary").text = element["InlineBinary"]
        else:
            _add_values(node, vr, element.get("Value") or [])


def _add_values(node: ET.Element, vr: str, values: list[Any]) -> None:
    for number, value in enumerate(values, start=1):
        if vr == "SQ":
            item = ET.SubElement(node, "Item", {"number": str(number)})
            _add_attributes(item, value or {})
        elif vr == "PN":
            _add_person_name(node, number, value)
        elif value is not None:
            ET.SubElement(node, "Value", {"number": str(number)}).text = _text(value)


def _add_person_name(node: ET.Element, number: int, value: Any) -> None:
    name = ET.SubElement(node, "PersonName", {"number": str(number)})
    groups = value if isinstance(value, dict) else {"Alphabetic": str(value or "")}
    for group in _PN_GROUPS:
        text = groups.get(group)
        if not text:
            continue
        group_node = ET.SubElement(name, group)
        for component, part in zip(_PN_COMPONENTS, str(text).split("^"), strict=False):
            if part:
                ET.SubElement(group_node, component).text = _text(part)


def _private_creator(dataset_json: dict[str, Any], tag: str) -> str | None:
    group, element = int(tag[:4], 16), int(tag[4:], 16)
    if group % 2 == 0 or element < 0x1000:
        return None
    reservation = dataset_json.get(f"{group:04X}{element >> 8:04X}", {})
    values = reservation.get("Value") or []
    return str(values[0]) if values else None
