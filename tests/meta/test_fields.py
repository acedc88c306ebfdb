"""The field catalogue, document checks and the text analyzer."""

from __future__ import annotations

import pytest

from jip.errors import Invalid
from jip.meta.fields import FIELDS, FieldType, Level, analyze, lookup, normalize_document


@pytest.mark.parametrize(("text", "tokens"), [
    ("CT ABDOMEN W/O CONTRAST", ["ct", "abdomen", "w", "o", "contrast"]),
    ("AX T1 POST 2.5mm", ["ax", "t1", "post", "2.5mm"]),
    ("T2-FLAIR cor", ["t2", "flair", "cor"]),
    ("t1_mprage_sag", ["t1_mprage_sag"]),
    ("e.g. 1,000 cases", ["e.g", "1,000", "cases"]),
    ("v.2 x,y", ["v", "2", "x", "y"]),
    ("Thorax nativ Übersicht", ["thorax", "nativ", "übersicht"]),
    ("--", []),
])
def test_text_is_tokenised_like_the_standard_analyzer(text: str, tokens: list[str]) -> None:
    assert analyze(text) == tokens


def test_text_fields_have_an_exact_keyword_twin() -> None:
    twin = lookup("SeriesDescription.keyword")
    assert (twin.type, twin.stored, twin.level) == (FieldType.KEYWORD, "SeriesDescription",
                                                    Level.SERIES)
    with pytest.raises(Invalid, match=r"unknown field 'Modality\.keyword'"):
        lookup("Modality.keyword")


def test_catalogue_levels_and_types() -> None:
    assert FIELDS["PatientAgeYears"].type is FieldType.FLOAT
    assert FIELDS["PatientSex"].level is Level.PATIENT
    assert FIELDS["StudyDate"].level is Level.STUDY
    assert FIELDS["SegmentLabels"].multi
    assert all(f.name.isidentifier() for f in FIELDS.values())  # safe as SQL column names


def test_documents_are_normalised() -> None:
    doc = normalize_document({
        "SeriesInstanceUID": "1.2", "StudyDate": "20200102", "SliceThickness": 3,
        "ImageType": "ORIGINAL", "BodyPartExamined": "", "Manufacturer": None,
        "PixelSpacing": [0.5, 0.5], "SeriesNumber": 4.0,
    })
    assert doc == {"SeriesInstanceUID": "1.2", "StudyDate": "2020-01-02", "SliceThickness": 3.0,
                   "ImageType": ["ORIGINAL"], "PixelSpacing": [0.5, 0.5], "SeriesNumber": 4}


@pytest.mark.parametrize(("doc", "message"), [
    ({"Modality": "CT"}, "no SeriesInstanceUID"),
    ({"SeriesInstanceUID": "1", "Secret": 1}, "unknown field 'Secret'"),
    ({"SeriesInstanceUID": "1", "Modality": ["CT"]}, "takes one value"),
    ({"SeriesInstanceUID": "1", "Rows": "512"}, "'Rows' value '512' is not integer"),
    ({"SeriesInstanceUID": "1", "StudyDate": "2020"}, "is not date"),
    ({"SeriesInstanceUID": "1", "SliceThickness": float("nan")}, "is not float"),
    ({"SeriesInstanceUID": "1", "ImageType": ["A", 1]}, "is not keyword"),
])
def test_bad_documents_are_invalid(doc: dict, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        normalize_document(doc)
