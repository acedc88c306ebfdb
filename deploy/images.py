#!/usr/bin/env python3
"""`make images`: build every image a site runs, here, without a container registry.

The images (tag = the project's version, which is the chart's appVersion):

- ``jip/base:bookworm``: Debian bookworm (minbase) with python3 and its venv module,
  made by ``mmdebstrap`` and ``podman import`` (no registry is needed). It is only the
  default ``BASE`` build argument: a site with a registry passes ``--base
  python:3.11-slim`` (any Debian-like image with python3 and ``venv``).
- ``jip/jip``: the platform, every role (``jip up --role ...``), deploy/Dockerfile.
- ``jip/airflow``: Airflow 3 with JIP's DAGs and worker code, deploy/airflow.Dockerfile.
- ``jip/operator-sdk``: the operator SDK (not the platform) in /opt/venv and the operator
  user, deploy/operator-sdk.Dockerfile; built before the operators, which start ``FROM``
  it (their ``SDK`` build argument) and add only their own files and libraries.
- ``jip/<operator>``: one per ``operators/<name>/Dockerfile``.

Each venv is filled in a build stage and copied into the final one (no pip, no uv, no
compiler there; an operator's extra libraries are installed with the build stage's uv
mounted, not copied), every image runs as a non-root user, and podman's layer cache plus
uv and pip cache mounts mean a rebuild after a code change reinstalls nothing; an
operator's own layers are a few kilobytes over the shared SDK layers. The result is
``build/images.json``: every image's id and digest, which workflows pin
(``jip/organ-seg@sha256:...``, see :mod:`jip.flow.worker.pod_operator`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "build" / "images.json"
IGNORE = ROOT / "deploy" / "containerignore"
DEFAULT_BASE = "localhost/jip/base:bookworm"
SDK = "operator-sdk"  # the operators' base image, jip/operator-sdk:<version>
# podman 4.3 with runc cannot raise these limits in a sandbox; set them explicitly.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
# What the base adds to minbase: Python 3.11 (bookworm's), its venv module, CA certs.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Where the build machine keeps its CA bundle; mounted over the build container's during
# RUN steps (never stored in a layer), so builds work behind a TLS-inspecting proxy.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
_TRIM = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")


@dataclass(frozen=True)
class Image:
    """One image this repository builds: its short name and its Dockerfile."""

    name: str
    dockerfile: Path
    # Built FROM jip/operator-sdk (build argument SDK) rather than from BASE.
    on_sdk: bool = False

    def ref(self, version: str) -> str:
        return f"jip/{self.name}:{version}"

    def build_args(self, *, base: str, version: str) -> dict[str, str]:
        """The one build argument its Dockerfile declares: SDK for operators, else BASE."""
        if self.on_sdk:
            return {"SDK": f"localhost/jip/{SDK}:{version}"}
        return {"BASE": base}


def version() -> str:
    """The project's version: every image's tag and the chart's appVersion."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def operator_names() -> list[str]:
    """Operators with a Dockerfile, in name order."""
    return sorted(p.parent.name for p in (ROOT / "operators").glob("*/Dockerfile"))


def all_images() -> list[Image]:
    """The platform first (the bundle's order), the operator SDK, then the operators."""
    images = [
        Image("jip", ROOT / "deploy" / "Dockerfile"),
        Image("airflow", ROOT / "deploy" / "airflow.Dockerfile"),
        Image(SDK, ROOT / "deploy" / f"{SDK}.Dockerfile"),
    ]
    images += [
        Image(n, ROOT / "operators" / n / "Dockerfile", on_sdk=True) for n in operator_names()
    ]
    return images


def chosen_images(names: list[str]) -> list[Image]:
    """``names`` (all when empty) in build order; the SDK joins any operator (its base)."""
    images = all_images()
    unknown = set(names) - {i.name for i in images}
    if unknown:
        sys.exit(f"images: no image named {', '.join(sorted(unknown))}; see --list")
    wanted = set(names)
    if any(i.on_sdk and i.name in wanted for i in images):
        wanted.add(SDK)
    return [i for i in images if not names or i.name in wanted]


def engine() -> str:
    found = shutil.which("podman")
    if found is None:
        sys.exit("images: podman is not installed (apt-get install podman)")
    return found


def image_exists(podman: str, ref: str) -> bool:
    return subprocess.run([podman, "image", "exists", ref], check=False).returncode == 0


def build_base(podman: str, ref: str = DEFAULT_BASE) -> None:
    """Debian bookworm minbase plus python3, from Debian's mirror, as ``ref``."""
    if shutil.which("mmdebstrap") is None:
        sys.exit(
            "images: mmdebstrap is not installed (apt-get install mmdebstrap), or pass "
            "--base python:3.11-slim where a registry is reachable"
        )
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(BASE_PACKAGES),
        *(f"--dpkgopt=path-exclude={p}" for p in _TRIM),
        "--aptopt=APT::Install-Recommends false",
        "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
        "bookworm",
        "-",
    ]
    say(f"base: mmdebstrap bookworm + {' '.join(BASE_PACKAGES)} -> {ref}")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as debootstrap:
        imported = subprocess.run(
            [podman, "import", "--change", 'CMD ["/bin/bash"]', "-", ref],
            stdin=debootstrap.stdout,
            stdout=subprocess.DEVNULL,
            check=False,
        )
    if debootstrap.returncode != 0 or imported.returncode != 0:
        sys.exit(f"images: building the base failed (mmdebstrap {debootstrap.returncode})")


def build_one(podman: str, image: Image, *, version: str, base: str, quiet: bool) -> None:
    tag = image.ref(version)
    build_args = image.build_args(base=base, version=version)
    argv = [
        podman,
        "build",
        "--format",
        "docker",  # keeps HEALTHCHECK (OCI image configs have no such field)
        "--layers",
        *ULIMITS,
        *host_ca_volume(),
        *(part for key, value in build_args.items() for part in ("--build-arg", f"{key}={value}")),
        "--file",
        str(image.dockerfile),
        "--ignorefile",
        str(IGNORE),
        "--tag",
        tag,
        str(ROOT),
    ]
    result = subprocess.run(argv, capture_output=quiet, text=True, check=False)
    if result.returncode != 0:
        if quiet:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        sys.exit(f"images: building {tag} failed (podman build exit {result.returncode})")


def host_ca_volume() -> list[str]:
    if os.environ.get("JIP_IMAGE_HOST_CA", "1") == "0" or not HOST_CA.is_file():
        return []
    return ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]


def inspect(podman: str, ref: str) -> dict[str, str]:
    """The image's id (its config's digest: stable across save, load and push) and its
    manifest digest as podman stores it locally."""
    out = subprocess.run(
        [podman, "image", "inspect", "--format", "{{.Id}} {{.Digest}} {{.Size}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {"id": f"sha256:{out[0]}", "digest": out[1], "size": out[2]}


def write_lock(entries: dict[str, dict[str, str]], base: str, path: Path = LOCK) -> None:
    """Merge ``entries`` into the lock file (a partial build keeps the others)."""
    lock: dict[str, object] = {"version": version(), "base": base, "images": {}}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("version") == lock["version"]:
            lock["images"] = old.get("images", {})
    images = lock["images"]
    assert isinstance(images, dict)
    images.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


def say(message: str) -> None:
    print(f"images: {message}", flush=True)


def build(names: list[str], *, base: str, refresh_base: bool, quiet: bool) -> list[str]:
    """Build ``names`` (all when empty); return their references."""
    podman = engine()
    chosen = chosen_images(names)
    if base == DEFAULT_BASE and (refresh_base or not image_exists(podman, base)):
        build_base(podman, base)
    tag_version = version()
    entries: dict[str, dict[str, str]] = {}
    started = time.monotonic()
    for number, image in enumerate(chosen, 1):
        tag = image.ref(tag_version)
        say(f"[{number}/{len(chosen)}] {tag} ({image.dockerfile.relative_to(ROOT)})")
        one = time.monotonic()
        build_one(podman, image, version=tag_version, base=base, quiet=quiet)
        entries[tag] = inspect(podman, tag)
        say(
            f"[{number}/{len(chosen)}] {tag} {entries[tag]['id'][:19]} {time.monotonic() - one:.0f} s"
        )
    write_lock(entries, base)
    say(f"built {len(chosen)} images in {time.monotonic() - started:.0f} s; digests in {LOCK}")
    return list(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/images.py",
        description="Build JIP's images with podman (base, jip, airflow, the operator SDK, "
        "one per operator on it) "
        "and record their digests in build/images.json.",
    )
    parser.add_argument(
        "names", nargs="*", help="only these images (jip, airflow, operator-sdk, operators)"
    )
    parser.add_argument(
        "--base",
        default=os.environ.get("JIP_IMAGE_BASE", DEFAULT_BASE),
        help="base image with python3 and venv (default: %(default)s, made with mmdebstrap)",
    )
    parser.add_argument(
        "--refresh-base", action="store_true", help="remake the mmdebstrap base first"
    )
    parser.add_argument("--list", action="store_true", help="print the image references and exit")
    parser.add_argument("--verbose", action="store_true", help="show podman build's output")
    args = parser.parse_args(argv)
    if args.list:
        for image in all_images():
            print(image.ref(version()))
        return 0
    build(args.names, base=args.base, refresh_base=args.refresh_base, quiet=not args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
