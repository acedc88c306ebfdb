"""Where a run's result files live in the result store: ``runs/<run_id>/<series>/<file>``.

put-output builds the keys (:func:`result_key`); the flow service records a file result
only under its own run's prefix (:func:`check_result_key`), so naming another run's or
another project's file cannot make it downloadable through this run.
"""

from __future__ import annotations

import re

from jip.errors import Invalid
from jip.store import check_key

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_segment(value: str) -> str:
    """A path segment and storage-key segment from a run id (``manual__...+00:00``)."""
    clean = _UNSAFE.sub("_", value).strip(".")
    return clean or "_"


def run_prefix(run_id: str) -> str:
    return f"runs/{safe_segment(run_id)}/"


def result_key(run_id: str, relative: str) -> str:
    """``runs/<run_id>/<series folder>/<file>`` in the result store."""
    parts = [safe_segment(p) for p in relative.split("/") if p]
    return check_key("/".join(["runs", safe_segment(run_id), *parts]))


def under_run(run_id: str, key: str) -> bool:
    """Whether ``key`` is a valid key below the run's own prefix."""
    try:
        check_key(key)
    except Invalid:
        return False
    return key.startswith(run_prefix(run_id)) and len(key) > len(run_prefix(run_id))


def check_result_key(run_id: str, key: str) -> str:
    if not under_run(run_id, key):
        raise Invalid(
            f"result file key {key!r} must lie under {run_prefix(run_id)} (the run's own "
            "folder in the result store)"
        )
    return key


def check_result_uid(key: str, result_series_uid: str | None) -> str:
    """A DICOM result's key is its Series Instance UID."""
    if not _UID.match(key) or len(key) > 64 or key != result_series_uid:
        raise Invalid(f"a DICOM result's key must be its result_series_uid (a UID), not {key!r}")
    return key
