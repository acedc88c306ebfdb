"""Runs an operator's ``main.py`` as a child process of the task, with this venv's Python.

How the child is started, what environment it sees and how it is stopped when the task
ends live in :mod:`jip.flow.worker.process`, shared with the container runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jip.flow.worker.process import contract_env, inherited_env, run_process
from jip.flow.worker.runner import LogSink, OperatorJob, OperatorOutcome


class SubprocessRunner:
    """Runs ``operators/<name>/main.py`` with the interpreter this code runs under."""

    name = "subprocess"

    def __init__(
        self,
        *,
        operators_dir: Path,
        timeout_s: float = 6 * 3600.0,
        python: str = sys.executable,
    ) -> None:
        self.operators_dir = operators_dir
        self.timeout_s = timeout_s
        self.python = python

    def command(self, job: OperatorJob) -> list[str]:
        return [self.python, str(self._main(job))]

    def run(self, job: OperatorJob, log: LogSink) -> OperatorOutcome:
        main = self._main(job)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        env = inherited_env() | contract_env(
            str(job.input_dir.resolve()), str(job.output_dir.resolve()), job.params
        )
        return run_process(
            [self.python, str(main)], env=env, log=log, timeout_s=self.timeout_s, cwd=main.parent
        )

    def _main(self, job: OperatorJob) -> Path:
        from jip.errors import NotFound

        main = self.operators_dir / job.operator / "main.py"
        if not main.is_file():
            raise NotFound(f"operator {job.operator!r} not found: no {main}")
        return main
