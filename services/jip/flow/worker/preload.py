"""Start an Airflow component with JIP's task modules already imported.

``python -m jip.flow.worker.preload scheduler`` is ``airflow scheduler`` with
:mod:`jip.flow.worker.tasks` (and through it the site's client, steps and runners)
imported first. The LocalExecutor's workers are forked from the scheduler and each task
process is forked from a worker, without exec; the DAG processor forks one process per
DAG file it parses. A module imported here is therefore imported once per component
rather than once per task and per parse: about a second of CPU on every task start on a
two-core site machine (measured by ``bench/bench_flow.py``). Like any code of JIP's, a
change to these modules takes effect when `jip up` restarts Airflow; DAG files
themselves are still read afresh by every parse and task.
"""

from __future__ import annotations

import sys


def preload() -> None:
    """Import what every DAG file and task imports (a failure here is theirs too: raise)."""
    import jip.flow.worker.tasks  # noqa: F401  (airflow.sdk, the client, steps, runners)


def main(argv: list[str]) -> None:
    """Run ``airflow <argv>`` in this process after :func:`preload`."""
    preload()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *argv]
    airflow_main()


if __name__ == "__main__":
    main(sys.argv[1:])
