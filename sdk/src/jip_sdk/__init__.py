"""The operator SDK: the contract, input series, progress, SEG I/O, test data.

Its own distribution (``jip-sdk``, in ``sdk/`` of the JIP repository): an operator image
installs it alone. It imports pydicom, numpy, highdicom, SimpleITK and jsonschema, never
the platform (``jip``); the platform imports it for the contract's variable names, the
exit statuses and the progress lines. An operator's ``main.py`` needs little more than::

    from jip_sdk import OperatorContext, iter_series, run_operator

    def process(context: OperatorContext) -> None:
        for series in iter_series(context.input_dir):
            ...

    if __name__ == "__main__":
        run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jip_sdk.contract import (
        ContractError,
        OperatorContext,
        ParamsError,
        read_context,
        validate_params,
    )
    from jip_sdk.entry import ExitCode, run_operator, run_process
    from jip_sdk.errors import Invalid, SdkError
    from jip_sdk.progress import Progress, parse_progress, report_progress
    from jip_sdk.roi import segment_values
    from jip_sdk.series import (
        InputSeries,
        SeriesError,
        find_series,
        iter_datasets,
        iter_series,
        load_image,
        read_datasets,
        require_modality,
        sort_slices,
    )

_EXPORTS = {
    "jip_sdk.contract": (
        "ContractError",
        "OperatorContext",
        "ParamsError",
        "read_context",
        "validate_params",
    ),
    "jip_sdk.entry": ("ExitCode", "run_operator", "run_process"),
    "jip_sdk.errors": ("Invalid", "SdkError"),
    "jip_sdk.progress": ("Progress", "parse_progress", "report_progress"),
    "jip_sdk.roi": ("segment_values",),
    "jip_sdk.series": (
        "InputSeries",
        "SeriesError",
        "find_series",
        "iter_datasets",
        "iter_series",
        "load_image",
        "read_datasets",
        "require_modality",
        "sort_slices",
    ),
}

if not TYPE_CHECKING:  # the type checker reads the imports above

    def __getattr__(name: str) -> object:
        """Import a public name's module on first use (the platform imports ``entry``
        and ``progress`` and should not load SimpleITK and highdicom with them)."""
        for module, names in _EXPORTS.items():
            if name in names:
                value = getattr(importlib.import_module(module), name)
                globals()[name] = value
                return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ContractError",
    "ExitCode",
    "InputSeries",
    "Invalid",
    "OperatorContext",
    "ParamsError",
    "Progress",
    "SdkError",
    "SeriesError",
    "find_series",
    "iter_datasets",
    "iter_series",
    "load_image",
    "parse_progress",
    "read_context",
    "read_datasets",
    "report_progress",
    "require_modality",
    "run_operator",
    "run_process",
    "segment_values",
    "sort_slices",
    "validate_params",
]
