"""The errors every service raises; `app.py` and `store/dimse_handlers.py` map them.

Services never raise HTTP or DIMSE specifics. Messages name the field or UID at fault
and, where it helps, what to do next.
"""

from __future__ import annotations


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
