"""The catalog's read methods for other services (meta, flow, the status page).

They answer what those services used to ask of store's tables directly; each respects
the catalog's project scope where it takes one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from jip.db import make_engine
from jip.migrations import upgrade
from jip.store import Catalog, FailedInstance, existing_instances
from jip.store.catalog.catalog import NewInstance
from jip.store.dicom_file import InstanceHeader

STUDY = "1.2.826.0.1.3680043.9.7433.2"
SERIES_A, SERIES_B = f"{STUDY}.1", f"{STUDY}.2"


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(engine: Engine) -> Catalog:
    """Two series of one study, both in the project "default"; A has two instances."""
    catalog = Catalog(engine)
    catalog.add(
        [_instance(f"{SERIES_A}.1", SERIES_A, 10), _instance(f"{SERIES_A}.2", SERIES_A, 20)]
    )
    catalog.add([_instance(f"{SERIES_B}.1", SERIES_B, 5)])
    return catalog


def _instance(sop: str, series: str, size: int) -> NewInstance:
    header = InstanceHeader(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_instance_uid=series,
        study_instance_uid=STUDY,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_id="PAT-READS",
    )
    sha = hashlib.sha256(sop.encode()).hexdigest()
    return NewInstance(header=header, size_bytes=size, sha256=sha, blob_key=f"{sop}.{sha[:8]}.dcm")


def test_studies_of_names_each_held_series_study_within_the_scope(catalog: Catalog) -> None:
    unknown = "1.2.3.4.5"
    assert catalog.studies_of([SERIES_A, unknown]) == {SERIES_A: STUDY}
    assert catalog.existing_series([SERIES_A, SERIES_B, unknown]) == {SERIES_A, SERIES_B}
    assert catalog.scoped(["default"]).studies_of([SERIES_A]) == {SERIES_A: STUDY}
    assert catalog.scoped(["elsewhere"]).studies_of([SERIES_A, SERIES_B]) == {}


def test_series_updated_between_is_half_open_and_oldest_first(catalog: Catalog) -> None:
    now = datetime.now(UTC)
    assert catalog.series_updated_between(now - timedelta(hours=1), now + timedelta(hours=1)) == [
        SERIES_A,
        SERIES_B,
    ]
    assert catalog.series_updated_between(now + timedelta(hours=1), now + timedelta(hours=2)) == []


def test_stored_bytes_sums_the_instances_as_received(catalog: Catalog) -> None:
    assert catalog.stored_bytes() == 35


def test_existing_instances_reads_in_the_callers_transaction(catalog: Catalog) -> None:
    with catalog.engine.begin() as conn:
        assert existing_instances(conn, [f"{SERIES_A}.1", "1.2.3"]) == {f"{SERIES_A}.1"}


def test_the_outbox_reads_pending_failed_and_requeued_instances(catalog: Catalog) -> None:
    assert catalog.outbox_counts() == (3, 0)
    assert catalog.series_pending_index([SERIES_A, SERIES_B]) == {SERIES_A, SERIES_B}
    catalog.mark_indexed([f"{SERIES_B}.1", f"{SERIES_A}.1"])
    catalog.mark_indexed([f"{SERIES_A}.2"], error="cannot parse header")
    assert catalog.series_pending_index([SERIES_A, SERIES_B]) == {SERIES_A}
    assert catalog.outbox_counts() == (0, 1)
    total, failures = catalog.index_failures()
    assert total == 1
    (failure,) = failures
    assert isinstance(failure, FailedInstance)
    assert failure[:3] == (f"{SERIES_A}.2", SERIES_A, "cannot parse header")
    assert catalog.scoped(["elsewhere"]).index_failures() == (0, [])
    assert catalog.scoped(["elsewhere"]).outbox_counts() == (0, 0)
    assert catalog.requeue_all() == 3
    assert catalog.outbox_counts() == (3, 0)
