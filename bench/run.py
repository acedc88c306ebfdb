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

The query benchmark compares with OpenSearch: unless JIP_TEST_OPENSEARCH_URL names a
node, the runner starts one for it with ``deploy/opensearch-test.sh`` (1 GB heap, the
1M-series index needs more than the tests' 512 MB) and stops it afterwards, so that
no JVM idles beside the other benchmarks. JIP_BENCH_OPENSEARCH=0 skips it.
"""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent
NODE_SCRIPT = HERE.parent / "deploy" / "opensearch-test.sh"


@contextlib.contextmanager
def opensearch_for(script: Path) -> Iterator[dict[str, str]]:
    """The environment a benchmark runs with: an OpenSearch node for the query bench."""
    env = dict(os.environ)
    wanted = "query" in script.stem and os.environ.get("JIP_BENCH_OPENSEARCH", "1") != "0"
    if not wanted or env.get("JIP_TEST_OPENSEARCH_URL"):
        yield env
        return
    env.setdefault("JIP_OS_HEAP", "1g")
    env.setdefault("JIP_OS_DIR", "/tmp/jip-opensearch-bench")
    started = subprocess.run(["bash", str(NODE_SCRIPT)], env=env, capture_output=True, text=True)
    if started.returncode:
        print(f"no OpenSearch for {script.stem} (compared without it):\n{started.stderr}")
        yield env
        return
    env["JIP_TEST_OPENSEARCH_URL"] = started.stdout.strip().split("=", 1)[1]
    try:
        yield env
    finally:
        subprocess.run(["bash", str(NODE_SCRIPT), "stop"], env=env, capture_output=True)


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
        with opensearch_for(script) as env:
            result = subprocess.run([sys.executable, str(script), *extra], env=env, check=False)
        print(f"== {script.stem}: exit {result.returncode} after {time.monotonic() - started:.0f} s ==\n")
        if result.returncode:
            failures.append(script.stem)
    if failures:
        print("failed:", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
