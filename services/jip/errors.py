"""The errors every service raises, and the one function that maps them to a protocol.

Services never raise HTTP or DIMSE specifics. Messages name the field or UID at fault
and, where it helps, what to do next. :func:`status_for` looks an error up in a
protocol's table: :data:`HTTP_STATUS` here (used by `app.py` and the UI), the DIMSE
tables per service class in :mod:`jip.store.dimse.handlers`.
"""

from __future__ import annotations

from collections.abc import Sequence


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
