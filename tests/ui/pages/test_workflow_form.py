"""The workflow form built from the shipped operators' parameter schemas."""

from __future__ import annotations

from jip.ui import workflow_form

SCHEMA = {
    "properties": {
        "radiomics": {
            "type": "object",
            "properties": {
                "bin_width": {"type": "number", "default": 25},
                "segment_labels": {"type": ["array", "null"], "default": None},
                "source_series_uid": {"type": ["string", "null"], "default": None},
            },
        }
    }
}


def test_nullable_properties_get_the_field_of_their_other_type() -> None:
    (operator,) = workflow_form.operators(SCHEMA)
    kinds = {field.name: field.kind for field in operator.fields}
    assert kinds == {
        "radiomics.bin_width": "number",
        "radiomics.segment_labels": "json",
        "radiomics.source_series_uid": "string",
    }


def test_empty_nullable_fields_are_left_out_and_filled_ones_converted() -> None:
    form = {"radiomics.bin_width": "10", "radiomics.segment_labels": '["Liver"]'}
    assert workflow_form.params(SCHEMA, form) == {
        "radiomics": {"bin_width": 10.0, "segment_labels": ["Liver"]}
    }
