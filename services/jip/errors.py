"""The errors every service raises, and the one function that maps them to a protocol.

Services never raise HTTP or DIMSE specifics. Messages name the field or UID at fault
and, where it helps, what to do next. :func:`status_for` looks an error up in a
protocol's table: :data:`HTTP_STATUS` here (used by `app.py` and the UI), the DIMSE
tables per service class in :mod:`jip.store.dimse.handlers`. :func:`detail_of` goes the
other way, for every client of an HTTP API (CLI, UI, workflow tasks, the Airflow
adapter): the message of an error answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Protocol


class JipError(Exception):
    """Base of all JIP errors."""


class NotFound(JipError):
    """The thing asked for does not exist (or is outside the caller's projects)."""


class Invalid(JipError):
    """The input is malformed: unparseable DICOM, a bad query, a bad UID."""


class Conflict(JipError):
    """The request clashes with what is stored."""


class Forbidden(JipError):
    """The caller may not do this."""


class Unauthorized(JipError):
    """No valid credentials were presented."""


class TooLarge(Invalid):
    """The input exceeds a configured size limit."""


class NotAcceptable(Invalid):
    """No representation the caller accepts can be produced (HTTP content negotiation)."""


class UnsupportedMediaType(Invalid):
    """The input comes in a media type this service does not take."""


class Unavailable(JipError):
    """A dependency (storage, database, Airflow) is not reachable or out of resources."""


class OutOfResources(Unavailable):
    """Disk full, memory exhausted or a similar local resource problem."""


StatusTable = Sequence[tuple[type[JipError], int]]

# Most specific first: TooLarge, NotAcceptable and UnsupportedMediaType are Invalid,
# OutOfResources an Unavailable.
HTTP_STATUS: StatusTable = [
    (TooLarge, 413),
    (NotAcceptable, 406),
    (UnsupportedMediaType, 415),
    (Invalid, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
    (OutOfResources, 507),
    (Unavailable, 503),
]
HTTP_INTERNAL_ERROR = 500


def status_for(
    exc: BaseException, table: StatusTable = HTTP_STATUS, default: int = HTTP_INTERNAL_ERROR
) -> int:
    """The first status in ``table`` whose error class ``exc`` is; ``default`` otherwise."""
    for kind, status in table:
        if isinstance(exc, kind):
            return status
    return default


class HttpAnswer(Protocol):
    """What :func:`detail_of` reads of an HTTP response (``httpx.Response`` has it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...


def detail_of(response: HttpAnswer, limit: int = 500) -> str:
    """The message of an error answer, for a person to read.

    FastAPI's and Airflow's ``{"detail": ...}`` (validation errors as ``loc: msg``
    joined by ``; ``), OAuth's ``error_description`` or ``error`` (RFC 6749 §5.2), else
    the body itself cut at ``limit`` characters, else the status's reason phrase.
    """
    try:
        body: Any = json.loads(response.text)
    except ValueError:
        return response.text[:limit] or _reason(response.status_code)
    if not isinstance(body, dict):
        return str(body)[:limit]
    detail = body.get("detail") or body.get("error_description") or body.get("error")
    if isinstance(detail, list):  # request validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return str(detail) if detail else str(body)[:limit]


def _reason(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return f"HTTP {status_code}"
