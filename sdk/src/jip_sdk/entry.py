"""The one entry point every operator's ``main.py`` calls.

``run_operator(process)`` reads the contract, runs ``process`` and turns the outcome into
the exit status a runner acts on. Exceptions are logged once, to stdout (the contract's
log channel), with a message that names what is wrong; the exit status says whose
problem it is, so a workflow UI can tell "fix your parameters" from "the operator broke".
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from enum import IntEnum
from pathlib import Path
from typing import NoReturn

from jip_sdk.contract import ContractError, OperatorContext, ParamsError, read_context
from jip_sdk.errors import Invalid

logger = logging.getLogger(__name__)

_CHATTY_LOGGERS = ("highdicom", "radiomics", "pydicom")


class ExitCode(IntEnum):
    """Exit statuses of an operator process."""

    OK = 0
    FAILED = 1  # a bug or an environment problem: look at the traceback
    BAD_PARAMS = 2  # JIP_PARAMS or the JIP_* variables are wrong: fix the run request
    BAD_INPUT = 3  # the input data cannot be processed: wrong modality, broken series


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines to stdout, where every runner collects them."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that narrate every step at INFO would bury the operator's own lines.
    for chatty in _CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def run_process(
    process: Callable[[OperatorContext], None],
    *,
    schema_path: Path,
    environ: Mapping[str, str] | None = None,
) -> ExitCode:
    """Run ``process`` under the contract and return the exit status (never raises)."""
    started = time.monotonic()
    try:
        context = read_context(schema_path, environ=environ)
        logger.info(
            "operator starting: input=%s output=%s params=%s",
            context.input_dir,
            context.output_dir,
            context.loggable_params(),
        )
        process(context)
    except (ContractError, ParamsError) as exc:
        logger.error("operator not started: %s", exc)
        return ExitCode.BAD_PARAMS
    except Invalid as exc:
        logger.error("operator failed on its input: %s", exc)
        return ExitCode.BAD_INPUT
    except Exception:
        logger.exception("operator failed")
        return ExitCode.FAILED
    logger.info("operator finished in %.1f s", time.monotonic() - started)
    return ExitCode.OK


def run_operator(
    process: Callable[[OperatorContext], None],
    *,
    schema_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Set up logging, run ``process`` and exit the interpreter with its status.

    ``schema_path`` defaults to ``params.schema.json`` next to the calling ``main.py``
    (the layout of ``operators/<name>/``).
    """
    configure_logging()
    if schema_path is None:
        schema_path = Path(sys.argv[0]).resolve().parent / "params.schema.json"
    status = run_process(process, schema_path=Path(schema_path), environ=environ)
    sys.stdout.flush()
    sys.exit(int(status))
