"""Deleting a study or a series from the catalog, inside the caller's transaction.

The rows of its instances, series and project assignments go, then the study when its
last series went, then patients left without a study. The blob keys come back: the
caller deletes the blobs once the rows are gone (:meth:`jip.store.catalog.catalog.Catalog.delete_study`).

A series shared by several projects is one set of files: an owner of some of its
projects removes it from those (:func:`delete_series_of`), and only an owner of all of
them (or a site admin) deletes it, so no project loses data another project's owner
decided to drop.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from jip.errors import Forbidden, NotFound
from jip.store.catalog.projects import reindex_series
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


def delete_series_of(
    conn: Connection, series_instance_uid: str, owned: Collection[str] | None
) -> list[str]:
    """Remove a series from the projects of ``owned`` (None: from everywhere).

    The series itself goes (its blob keys come back) when ``owned`` holds every project
    it is in; otherwise only its assignments to ``owned`` go, the index is told, and no
    key comes back. Decided inside the transaction, so an assignment made meanwhile is
    seen. :class:`Forbidden` when ``owned`` holds none of its projects.
    """
    if owned is None:
        return delete_series(conn, series_instance_uid)
    projects = set(
        conn.execute(
            select(SeriesProject.project).where(
                SeriesProject.series_instance_uid == series_instance_uid
            )
        ).scalars()
    )
    mine = projects & set(owned)
    if not mine:
        raise Forbidden(
            f"deleting series {series_instance_uid} needs the owner role in one of its projects"
        )
    if projects == mine:
        return delete_series(conn, series_instance_uid)
    conn.execute(
        delete(SeriesProject).where(
            SeriesProject.series_instance_uid == series_instance_uid,
            SeriesProject.project.in_(sorted(mine)),
        )
    )
    reindex_series(conn, series_instance_uid)
    return []


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
