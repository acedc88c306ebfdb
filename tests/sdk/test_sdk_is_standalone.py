"""The operator SDK imports nothing of the platform: operator images install it alone.

Every ``jip_sdk`` module is imported in a fresh interpreter in which ``jip`` cannot be
imported (a finder on ``sys.meta_path`` refuses it), so a stray ``from jip... import``
fails here rather than in an operator image at a site.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SDK_SRC = Path(__file__).resolve().parents[2] / "sdk" / "src"

_PROBE = """
import importlib, json, pkgutil, sys
from importlib.abc import MetaPathFinder

class RefusePlatform(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "jip" or name.startswith("jip."):
            raise ImportError(f"jip_sdk must not import the platform: {name}")
        return None

sys.meta_path.insert(0, RefusePlatform())
sys.path.insert(0, sys.argv[1])
import jip_sdk
modules = ["jip_sdk"] + [
    info.name for info in pkgutil.walk_packages(jip_sdk.__path__, prefix="jip_sdk.")
]
for name in modules:
    importlib.import_module(name)
platform = sorted(m for m in sys.modules if m == "jip" or m.startswith("jip."))
print(json.dumps({"sdk": jip_sdk.__file__, "modules": modules, "platform": platform}))
"""


def test_every_sdk_module_imports_without_the_platform() -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, str(SDK_SRC)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["sdk"]).is_relative_to(SDK_SRC)
    assert report["platform"] == []
    expected = {"jip_sdk"} | {f"jip_sdk.{p.stem}" for p in (SDK_SRC / "jip_sdk").glob("*.py")}
    assert set(report["modules"]) == expected - {"jip_sdk.__init__"}
