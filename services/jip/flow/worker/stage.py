"""``python -m jip.flow.worker.stage``: the stage containers of operator pods without a shared volume.

``fetch --dest DIR UID...`` writes each series to ``DIR/<UID>/`` through WADO-RS (the
get-input step); ``push --source DIR --run-id R --series S --operator O`` delivers an
operator's output (the put-output step): DICOM by STOW-RS, every other file through the
flow API. Both reach the site only through its API, at ``JIP_API_URL`` (or the Services
``JIP_FLOW__API__STORE_URL`` and ``JIP_FLOW__API__FLOW_URL`` name) with the run's
``JIP_API_TOKEN``: no database, bucket or result-store credentials in an operator pod.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from jip.config import Settings
from jip.errors import JipError
from jip.flow.worker import steps
from jip.flow.worker.api_client import JipClient

log = logging.getLogger("jip.flow.worker.stage")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jip.flow.worker.stage")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch series from the store (WADO-RS)")
    fetch.add_argument("--dest", type=Path, required=True)
    fetch.add_argument("series", nargs="+")
    push = commands.add_parser("push", help="deliver an operator's output")
    push.add_argument("--source", type=Path, required=True)
    push.add_argument("--run-id", required=True)
    push.add_argument("--series", required=True)
    push.add_argument("--operator", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
    settings = Settings()
    try:
        with JipClient.from_settings(settings) as client:
            if args.command == "fetch":
                for uid in args.series:
                    client.fetch_series(uid, args.dest)
            else:
                steps.put_output(
                    client=client,
                    results=None,  # files through the flow API, never the bucket
                    run_id=args.run_id,
                    series_uid=args.series,
                    operator=args.operator,
                    output_dir=args.source,
                )
    except JipError as exc:
        log.error("%s failed: %s", args.command, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
