"""Print the dependencies of a pyproject.toml (and of the named extras), one a line.

Used inside image builds: installing the requirements in their own layer, before the
source is copied, means a code change rebuilds only the last small layer. The operator
SDK (``jip-sdk``) is left out: it is installed from ``sdk/``, never from an index.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

SKIP = {"jip-sdk"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def requirements(pyproject: Path, extras: list[str], exclude: set[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    found = list(project.get("dependencies", []))
    for extra in extras:
        found += project.get("optional-dependencies", {})[extra]
    return [r for r in found if _name(r) not in SKIP | exclude]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("extras", nargs="*", help="optional-dependency groups to add")
    parser.add_argument("--exclude", action="append", default=[], help="leave this one out")
    args = parser.parse_args()
    exclude = {name.lower() for name in args.exclude}
    print("\n".join(requirements(args.pyproject, args.extras, exclude)))
