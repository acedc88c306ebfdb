"""The operator SDK: the contract, input series, progress, SEG I/O, test data.

An operator's ``main.py`` needs little more than::

    from jip.flow.sdk import OperatorContext, iter_series, run_operator

    def process(context: OperatorContext) -> None:
        for series in iter_series(context.input_dir):
            ...

    if __name__ == "__main__":
        run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
"""

from jip.flow.sdk.contract import (
    ContractError,
    OperatorContext,
    ParamsError,
    read_context,
    validate_params,
)
from jip.flow.sdk.entry import ExitCode, run_operator, run_process
from jip.flow.sdk.progress import Progress, parse_progress, report_progress
from jip.flow.sdk.series import (
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

__all__ = [
    "ContractError",
    "ExitCode",
    "InputSeries",
    "OperatorContext",
    "ParamsError",
    "Progress",
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
    "sort_slices",
    "validate_params",
]
