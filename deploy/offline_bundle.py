#!/usr/bin/env python3
"""`make offline-bundle`: one archive to install a JIP site without internet access.

``build/jip-offline-<version>.tar`` holds:

- ``images.tar``: every image this repository builds that the site runs (``podman save
  -m``, one docker archive): the images the chart references (``jip/jip``,
  ``jip/airflow``), one per operator (Airflow starts those as pods) and the operator
  SDK base they are built on (``jip/operator-sdk``: its layers are the operators' own,
  so it adds next to nothing, and the site can build its own operators on it offline);
- ``images.txt``: the references in ``images.tar``, one a line;
- ``external-images.txt``: the third-party images the chart references (PostgreSQL,
  MinIO, OpenSearch, Keycloak), which no registry here can give us: the site mirrors
  them into its registry, or switches those parts off for its managed services;
- ``chart/jip``: the chart, and ``install.sh``: push the images into the site's registry
  (or import them into containerd), then ``helm upgrade --install``.

The image references come from the chart itself, rendered with its default values by
Helm's own engine (helm-python-sdk), so the bundle and the chart cannot drift apart.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import images as built_images  # deploy/images.py (scripts here run from deploy/)
import yaml

ROOT = built_images.ROOT
CHART = ROOT / "charts" / "jip"
INSTALL = Path(__file__).resolve().parent / "offline-install.sh"
_POD_LISTS = ("containers", "initContainers", "ephemeralContainers")


def chart_images(values: dict[str, Any] | None = None) -> set[str]:
    """Every container image of every object the chart renders for ``values``."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="jip", namespace="jip")
    found: set[str] = set()
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            for document in yaml.safe_load_all(text):
                found |= set(_pod_images(document))
    return found


def _pod_images(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _POD_LISTS and isinstance(value, list):
                yield from (c["image"] for c in value if isinstance(c, dict) and "image" in c)
            else:
                yield from _pod_images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pod_images(item)


def is_ours(ref: str) -> bool:
    """``jip/<name>:<tag>`` (or ``<registry>/jip/...``): an image `make images` builds."""
    return ref.startswith("jip/") or "/jip/" in ref


def operator_images() -> set[str]:
    """What the bundle carries beyond the chart's references: the operators (pods that
    Airflow starts) and the SDK base they are built on."""
    version = built_images.version()
    names = [built_images.SDK, *built_images.operator_names()]
    return {f"jip/{name}:{version}" for name in names}


def plan(chart_refs: set[str]) -> tuple[list[str], list[str]]:
    """(images the bundle carries, third-party images the site provides)."""
    ours = sorted({r for r in chart_refs if is_ours(r)} | operator_images())
    return ours, sorted(r for r in chart_refs if not is_ours(r))


def save_images(podman: str, refs: list[str], archive: Path) -> None:
    missing = [r for r in refs if not built_images.image_exists(podman, f"localhost/{r}")]
    if missing:
        sys.exit(f"offline-bundle: not built yet: {', '.join(missing)}; run `make images`")
    local = [f"localhost/{r}" for r in refs]
    subprocess.run(
        [
            podman,
            "save",
            "--multi-image-archive",
            "--format",
            "docker-archive",
            "-o",
            str(archive),
            *local,
        ],
        check=True,
    )


def write_bundle(out: Path, *, podman: str) -> Path:
    """Write the bundle to ``out``; return its path."""
    ours, external = plan(chart_images())
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        archive = Path(scratch) / "images.tar"
        say(f"saving {len(ours)} images ({', '.join(ours)})")
        save_images(podman, ours, archive)
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as bundle:
            bundle.add(archive, arcname="images.tar")
            _add_text(bundle, "images.txt", "".join(f"{r}\n" for r in ours))
            _add_text(bundle, "external-images.txt", "".join(f"{r}\n" for r in external))
            bundle.add(CHART, arcname="chart/jip", filter=_no_caches)
            bundle.add(INSTALL, arcname="install.sh")
        partial.replace(out)  # never a half-written bundle under the final name
    say(
        f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB); the site provides: {', '.join(external)}"
    )
    return out


def bundle_contents(bundle: Path) -> tuple[set[str], set[str]]:
    """(the references inside ``images.tar``, by its own manifest; the external list)."""
    with tarfile.open(bundle) as outer:
        external = _read(outer, "external-images.txt").split()
        inner = outer.extractfile("images.tar")
        assert inner is not None
        with tarfile.open(fileobj=inner, mode="r|") as images:
            for member in images:
                if member.name == "manifest.json":
                    handle = images.extractfile(member)
                    assert handle is not None
                    manifest = yaml.safe_load(handle.read())
                    break
            else:
                raise ValueError(f"{bundle}: images.tar has no manifest.json")
    tags = {t.removeprefix("localhost/") for entry in manifest for t in entry.get("RepoTags") or []}
    return tags, set(external)


def _read(archive: tarfile.TarFile, name: str) -> str:
    handle = archive.extractfile(name)
    assert handle is not None
    return handle.read().decode()


def _add_text(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    archive.addfile(info, io.BytesIO(data))


def _no_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name else info


def say(message: str) -> None:
    print(f"offline-bundle: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/offline_bundle.py",
        description="Write one archive with JIP's images, the chart and an install script, "
        "for a site without internet access (run `make images` first).",
    )
    version = built_images.version()
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "build" / f"jip-offline-{version}.tar",
        help="where to write the bundle (default: %(default)s)",
    )
    parser.add_argument(
        "--external-images",
        action="store_true",
        help="only print the third-party images the site must provide, one a line",
    )
    args = parser.parse_args(argv)
    if args.external_images:
        print("\n".join(plan(chart_images())[1]))
        return 0
    podman = shutil.which("podman")
    if podman is None:
        sys.exit("offline-bundle: podman is not installed (apt-get install podman)")
    write_bundle(args.output, podman=podman)
    return 0


if __name__ == "__main__":
    sys.exit(main())
