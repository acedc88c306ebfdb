"""The SDK's own errors, so that an operator image needs nothing of the platform.

An operator raises :class:`Invalid` (or a subclass such as ``SeriesError``) for input it
cannot process; ``run_operator`` turns it into exit status 3. :class:`ContractError` and
``ParamsError`` mean the run request or the runner is wrong (exit status 2). The platform
never catches these classes: it reads only the exit status of the operator's process.
"""

from __future__ import annotations


class SdkError(Exception):
    """Base of every error the SDK raises."""


class Invalid(SdkError):
    """The input is malformed or not for this operator: a broken series, a wrong modality."""
