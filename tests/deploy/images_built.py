"""The images `make images` builds, for the tests that run them: podman, the build
script (deploy/images.py, loaded from its file), and `podman run` with the limits podman
4.3 with runc needs in a sandbox."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


def deploy_module(name: str) -> ModuleType:
    """``deploy/<name>.py`` as a module (deploy/ is scripts, not a package)."""
    path = ROOT / "deploy" / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # the scripts import each other by name
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def podman() -> str:
    found = shutil.which("podman")
    if found is None:
        pytest.skip("podman is not installed (.ci/run installs it with mmdebstrap)")
    return found


def ensure_built(*names: str) -> dict[str, str]:
    """Build ``names`` (layer cache: seconds when `make images` ran); name -> reference."""
    images = deploy_module("images")
    podman()
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "images.py"), *names],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = images.version()
    return {name: f"localhost/jip/{name}:{version}" for name in names}


def limit_containers(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every `podman run` (the container runner's too) the limits runc can set in a
    sandbox, through a containers.conf in ``folder``."""
    conf = folder / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))


def run_in(
    image: str, *argv: str, entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm`` of ``image`` with the sandbox's limits."""
    command = [podman(), "run", "--rm", *ULIMITS, "--no-healthcheck", "--network", "none"]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return subprocess.run(
        [*command, image, *argv], capture_output=True, text=True, timeout=300, check=False
    )
