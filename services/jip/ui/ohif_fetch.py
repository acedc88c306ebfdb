"""Fetch the OHIF viewer (the published ``@ohif/app``, its prebuilt ``dist/``) for ``/viewer``.

`make install` runs ``python -m jip.ui.ohif_fetch``. The package is pinned by version
and by the sha512 integrity the npm registry publishes for that version, checked on the
downloaded bytes before anything is unpacked; a second run finds the marker and returns
at once. The build expects to live at the site root (``/``), so after the check its
public path is moved to :data:`MOUNT` (index.html links, webpack's public path in the
bundles, font URLs in the CSS): OHIF then loads every chunk, worker and codec from
``/viewer/`` on JIP's own origin.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from jip.errors import Invalid, Unavailable

VERSION = "3.13.2"
# `npm view @ohif/app@3.13.2 dist.integrity` (sha512 of the tarball, base64).
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
REGISTRY = "https://registry.npmjs.org"
MOUNT = "/viewer"
MARKER = ".jip-ohif"  # holds the integrity of the tarball the folder came from
_DIST = "package/dist/"
_PUBLIC_PATH = '__webpack_require__.p = "/";'

Progress = Callable[[int, int | None], None]


def tarball_url(registry: str = REGISTRY) -> str:
    return f"{registry.rstrip('/')}/@ohif/app/-/app-{VERSION}.tgz"


def dist_dir(root: Path) -> Path:
    """The unpacked ``dist/`` of the pinned version under ``root`` (``ui.ohif.dir``)."""
    return root / VERSION


def is_installed(root: Path) -> bool:
    marker = dist_dir(root) / MARKER
    return marker.is_file() and marker.read_text().strip() == INTEGRITY


def check_integrity(digest: bytes, expected: str | None = None) -> None:
    """``expected`` (the pinned :data:`INTEGRITY` by default) is npm's
    Subresource-Integrity form, ``sha512-<base64>``."""
    expected = expected or INTEGRITY
    got = "sha512-" + base64.b64encode(digest).decode()
    if got != expected:
        raise Invalid(
            f"@ohif/app {VERSION} does not match its pinned integrity (got {got}, expected "
            f"{expected}): the registry or a proxy served other bytes; nothing was installed"
        )


def download(url: str, into: Path, progress: Progress | None = None) -> bytes:
    """Stream ``url`` into the file ``into``; returns the sha512 digest of the bytes."""
    digest = hashlib.sha512()
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0) or None
            done = 0
            with into.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"cannot download {url}: {exc}; check the network or --registry"
        ) from None
    return digest.digest()


def unpack(tarball: Path, into: Path) -> None:
    """Only ``package/dist/`` is kept; tarfile's data filter refuses links and paths
    that leave ``into``."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(_DIST)]
        for member in members:
            member.name = member.name[len(_DIST) :]
        archive.extractall(into, members=[m for m in members if m.name], filter="data")


def move_public_path(dist: Path, mount: str = MOUNT) -> None:
    """Rewrite the root-relative URLs of a build made for ``/`` to ``mount``."""
    prefix = mount.rstrip("/") + "/"
    index = dist / "index.html"
    html = index.read_text()
    html = re.sub(r'((?:href|src|content)=")/(?!/)', rf"\g<1>{prefix}", html)
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{prefix}"')
    index.write_text(html)
    for script in dist.glob("*.js"):
        text = script.read_text(errors="surrogateescape")
        if _PUBLIC_PATH in text:
            moved = text.replace(_PUBLIC_PATH, f'__webpack_require__.p = "{prefix}";')
            script.write_text(moved, errors="surrogateescape")
    for sheet in dist.glob("*.css"):
        css = sheet.read_text()
        sheet.write_text(re.sub(r"url\(/(?!/)", f"url({prefix}", css))
    (dist / "app-config.js").unlink(missing_ok=True)  # JIP generates its own


def install(root: Path, *, registry: str = REGISTRY, progress: Progress | None = None) -> bool:
    """Put the pinned viewer under ``root``; False when it was already there."""
    if is_installed(root):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as scratch:
        tarball = Path(scratch) / "app.tgz"
        check_integrity(download(tarball_url(registry), tarball, progress))
        staged = Path(scratch) / "dist"
        unpack(tarball, staged)
        move_public_path(staged)
        (staged / MARKER).write_text(INTEGRITY + "\n")
        target = dist_dir(root)
        if target.exists():
            shutil.rmtree(target)  # a half-written or stale copy, without the marker
        staged.rename(target)
    return True


def _bar(done: int, total: int | None) -> None:
    shown = f"{done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else "")
    sys.stderr.write(f"\r  @ohif/app {VERSION}: {shown}")
    if total and done >= total:
        sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jip.ui.ohif_fetch",
        description=f"Fetch the OHIF viewer (@ohif/app {VERSION}, integrity-checked) that "
        "JIP serves at /viewer. Does nothing when it is already there.",
    )
    parser.add_argument(
        "--dir", type=Path, help="where to put it (default: the site's ui.ohif.dir setting)"
    )
    parser.add_argument("--registry", default=REGISTRY, help=f"npm registry (default {REGISTRY})")
    args = parser.parse_args(argv)
    if args.dir is None:
        from jip.config import Settings

        args.dir = Settings().ui.ohif.dir
    try:
        fetched = install(args.dir, registry=args.registry, progress=_bar)
    except (Invalid, Unavailable, OSError, tarfile.TarError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    state = "fetched" if fetched else "already present"
    sys.stderr.write(f"OHIF viewer {VERSION} {state} in {dist_dir(args.dir)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
