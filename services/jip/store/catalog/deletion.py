"""Deleting a study or a series from the catalog, inside the caller's transaction.

The rows of its instances, series and project assignments go, then the study when its
last series went, then patients left without a study. The blob keys come back: the
caller deletes the blobs once the rows are gone (:meth:`jip.store.catalog.catalog.Catalog.delete_study`).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from jip.errors import NotFound
from jip.store.catalog.tables import Instance, Patient, Series, SeriesProject, Study


def delete_study(conn: Connection, study_instance_uid: str) -> list[str]:
    """Remove a study's rows; returns the blob keys the caller must delete."""
    series_uids = list(
        conn.execute(
            select(Series.series_instance_uid).where(
                Series.study_instance_uid == study_instance_uid
            )
        ).scalars()
    )
    if not series_uids:
        raise NotFound(f"study {study_instance_uid} not found")
    keys = _delete_series_rows(conn, series_uids)
    conn.execute(delete(Study).where(Study.study_instance_uid == study_instance_uid))
    _delete_orphan_patients(conn)
    return keys


def delete_series(conn: Connection, series_instance_uid: str) -> list[str]:
    """Remove a series' rows (and its study if it was the last series)."""
    study_uid = conn.execute(
        select(Series.study_instance_uid).where(Series.series_instance_uid == series_instance_uid)
    ).scalar_one_or_none()
    if study_uid is None:
        raise NotFound(f"series {series_instance_uid} not found")
    keys = _delete_series_rows(conn, [series_instance_uid])
    remaining = conn.execute(
        select(func.count()).select_from(Series).where(Series.study_instance_uid == study_uid)
    ).scalar_one()
    if remaining == 0:
        conn.execute(delete(Study).where(Study.study_instance_uid == study_uid))
        _delete_orphan_patients(conn)
    return keys


def _delete_series_rows(conn: Connection, series_uids: list[str]) -> list[str]:
    keys = list(
        conn.execute(
            select(Instance.blob_key).where(Instance.series_instance_uid.in_(series_uids))
        ).scalars()
    )
    conn.execute(delete(Instance).where(Instance.series_instance_uid.in_(series_uids)))
    conn.execute(delete(SeriesProject).where(SeriesProject.series_instance_uid.in_(series_uids)))
    conn.execute(delete(Series).where(Series.series_instance_uid.in_(series_uids)))
    return keys


def _delete_orphan_patients(conn: Connection) -> None:
    conn.execute(delete(Patient).where(~Patient.pk.in_(select(Study.patient_pk).distinct())))
