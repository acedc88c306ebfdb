"""A later round sealed to each site (:func:`seal_round`, :func:`open_round`): no output
in clear on the wire, each site opens only its own entry, and an entry that is altered,
moved to another round or site, or asks a first-round kind is refused."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from pydantic import ValidationError

from jip.errors import Forbidden, Invalid
from jip.federation import DeclaredOutput, OutputKind, encode_key, generate_box_keys
from jip.federation.crypto import canonical_json, seal
from jip.federation.protocol import MAX_ROUND_BYTES, RoundRequest, open_round, seal_round

CENTRE = 1234.56789012
DEVIATIONS = DeclaredOutput(
    name="t.dev",
    kind=OutputKind.LEVENE_ROUND2,
    field="adc",
    groups=("a", "b"),
    centres={"a": (CENTRE, 1e-12), "b": (2.5, 0.0)},
)
SITES = {"aachen": generate_box_keys(), "bonn": generate_box_keys()}
PUBLIC = {name: encode_key(keys.public) for name, keys in SITES.items()}


def test_each_site_opens_its_own_entry_and_nothing_is_in_clear() -> None:
    job_id = uuid.uuid4().hex
    request = seal_round(job_id, 2, (DEVIATIONS,), PUBLIC)
    assert set(request.sealed) == {"aachen", "bonn"}
    assert repr(CENTRE) not in request.model_dump_json()
    for name, keys in SITES.items():
        assert open_round(request, name, keys.private) == (DEVIATIONS,)
    with pytest.raises(Forbidden, match="does not open"):
        open_round(request, "aachen", SITES["bonn"].private)
    with pytest.raises(Forbidden, match="not sealed to site koeln"):
        open_round(request, "koeln", generate_box_keys().private)
    again = RoundRequest.model_validate_json(request.model_dump_json())
    assert again == request
    with pytest.raises(ValidationError, match="extra"):
        RoundRequest.model_validate({**request.model_dump(), "outputs": []})


def test_an_altered_entry_or_one_moved_to_another_round_or_site_is_refused() -> None:
    job_id = uuid.uuid4().hex
    request = seal_round(job_id, 2, (DEVIATIONS,), PUBLIC)
    box = bytearray(base64.b64decode(request.sealed["aachen"]))
    box[40] ^= 0x80
    altered = RoundRequest(
        job_id=job_id, round=2, sealed={"aachen": base64.b64encode(bytes(box)).decode()}
    )
    with pytest.raises(Forbidden, match="does not open"):
        open_round(altered, "aachen", SITES["aachen"].private)
    replayed = request.model_copy(update={"round": 3})
    with pytest.raises(Forbidden, match="another job, round or site"):
        open_round(replayed, "aachen", SITES["aachen"].private)
    other_job = request.model_copy(update={"job_id": uuid.uuid4().hex})
    with pytest.raises(Forbidden, match="another job, round or site"):
        open_round(other_job, "aachen", SITES["aachen"].private)


def test_an_entry_asking_a_first_round_kind_or_not_json_is_invalid() -> None:
    job_id = uuid.uuid4().hex
    count = DeclaredOutput(name="n", kind=OutputKind.COUNT, field="adc")
    with pytest.raises(ValidationError, match="a later round asks only"):
        seal_round(job_id, 2, (count,), PUBLIC)
    document = {
        "job_id": job_id,
        "round": 2,
        "site_id": "aachen",
        "outputs": [count.model_dump(mode="json")],
    }
    forged = seal(canonical_json(document), SITES["aachen"].public)
    request = RoundRequest(
        job_id=job_id, round=2, sealed={"aachen": base64.b64encode(forged).decode()}
    )
    with pytest.raises(Invalid, match="a later round asks only"):
        open_round(request, "aachen", SITES["aachen"].private)
    not_json = seal(b"[1, 2", SITES["aachen"].public)
    request = RoundRequest(
        job_id=job_id, round=2, sealed={"aachen": base64.b64encode(not_json).decode()}
    )
    with pytest.raises(Invalid, match="not a JSON object"):
        open_round(request, "aachen", SITES["aachen"].private)
    listed = seal(json.dumps([1]).encode(), SITES["aachen"].public)
    request = RoundRequest(
        job_id=job_id, round=2, sealed={"aachen": base64.b64encode(listed).decode()}
    )
    with pytest.raises(Invalid, match="not a JSON object"):
        open_round(request, "aachen", SITES["aachen"].private)


def test_a_round_too_large_or_to_nobody_is_refused_before_sealing() -> None:
    job_id = uuid.uuid4().hex
    many = tuple(float(i) for i in range(MAX_ROUND_BYTES // 8))
    huge = DeclaredOutput(
        name="t.counts",
        kind=OutputKind.COUNT_AT_MOST,
        field="adc",
        thresholds={"all": many},
    )
    with pytest.raises(Invalid, match="--fanout"):
        seal_round(job_id, 2, (huge,), PUBLIC)
    with pytest.raises(Invalid, match="no site"):
        seal_round(job_id, 2, (DEVIATIONS,), {})
    with pytest.raises(ValidationError):
        RoundRequest(job_id=job_id, round=2, sealed={"aachen": "A" * (MAX_ROUND_BYTES * 2)})
