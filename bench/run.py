"""`make bench`: run every benchmark in this folder, one after the other.

Each benchmark prints its own ratio against a reference measured in the same run
(Orthanc for ingest, a plain scan for queries, the same statistics computed in one
process for the federation); this runner only sequences them so that they never
compete for the machine's cores.

    .venv/bin/python bench/run.py [NAME ...] [-- ARG ...]

NAMEs pick the benchmarks whose file name contains one of them (all by default); ARGs
after ``--`` go to each picked benchmark (``run.py qido query -- --series 500 --runs 3``;
``run.py federation -- --sites 20 --series 300 --jobs 5``). ``run.py --help`` lists
them; ``bench/bench_NAME.py --help`` gives one benchmark's arguments.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    selected, extra = sys.argv[1:], []
    if "--" in selected:
        at = selected.index("--")
        selected, extra = selected[:at], selected[at + 1 :]
    scripts = sorted(HERE.glob("bench_*.py"))
    if {"-h", "--help"} & set(selected):
        print(__doc__)
        for script in scripts:
            summary = (ast.get_docstring(ast.parse(script.read_text())) or "").splitlines()
            print(f"  {script.stem.removeprefix('bench_'):12} {summary[0] if summary else ''}")
        return 0
    if selected:
        scripts = [s for s in scripts if any(name in s.stem for name in selected)]
    failures = []
    for script in scripts:
        print(f"== {script.stem} ==", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script), *extra], check=False)
        print(f"== {script.stem}: exit {result.returncode} after {time.monotonic() - started:.0f} s ==\n")
        if result.returncode:
            failures.append(script.stem)
    if failures:
        print("failed:", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
