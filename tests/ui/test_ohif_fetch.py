"""Fetching OHIF for /viewer: the pinned integrity is checked before anything is unpacked,
a second run does nothing, and a build made for ``/`` is moved under ``/viewer/``."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from jip.errors import Invalid
from jip.ui import ohif_fetch


def _tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


BUILD = {
    "package/package.json": "{}",
    "package/dist/index.html": (
        '<link rel="manifest" href="/manifest.json"><script>window.PUBLIC_URL="/"</script>'
        '<script src="/app-config.js"></script><script defer src="/app.bundle.abc.js"></script>'
        '<a href="//cdn.example/x">'
    ),
    "package/dist/app.bundle.abc.js": '(() => { __webpack_require__.p = "/"; })();',
    "package/dist/app-config.js": "window.config = {demo: true};",
    "package/dist/app.bundle.css": "@font-face{src:url(/a34f.woff2)}",
}


def test_a_build_for_the_root_is_moved_under_the_viewer_path(tmp_path: Path) -> None:
    tarball = tmp_path / "app.tgz"
    tarball.write_bytes(_tarball(BUILD))
    dist = tmp_path / "dist"
    ohif_fetch.unpack(tarball, dist)
    ohif_fetch.move_public_path(dist)
    assert sorted(p.name for p in dist.iterdir()) == [
        "app.bundle.abc.js",
        "app.bundle.css",
        "index.html",
    ]
    html = (dist / "index.html").read_text()
    assert 'href="/viewer/manifest.json"' in html and 'src="/viewer/app.bundle.abc.js"' in html
    assert 'window.PUBLIC_URL="/viewer/"' in html
    assert 'href="//cdn.example/x"' in html  # protocol-relative URLs are no paths of ours
    assert '__webpack_require__.p = "/viewer/"' in (dist / "app.bundle.abc.js").read_text()
    assert "url(/viewer/a34f.woff2)" in (dist / "app.bundle.css").read_text()


def test_bytes_that_differ_from_the_pinned_integrity_install_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _tarball(BUILD)

    def served(url: str, into: Path, progress: object = None) -> bytes:
        assert url == f"https://registry.example/@ohif/app/-/app-{ohif_fetch.VERSION}.tgz"
        into.write_bytes(payload)
        return hashlib.sha512(payload).digest()

    monkeypatch.setattr(ohif_fetch, "download", served)
    with pytest.raises(Invalid, match="does not match its pinned integrity"):
        ohif_fetch.install(tmp_path, registry="https://registry.example/")
    assert not ohif_fetch.is_installed(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the scratch folder is gone too


def test_the_pinned_tarball_installs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _tarball(BUILD)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(payload).digest()).decode()
    monkeypatch.setattr(ohif_fetch, "INTEGRITY", integrity)
    calls: list[str] = []

    def served(url: str, into: Path, progress: object = None) -> bytes:
        calls.append(url)
        into.write_bytes(payload)
        return hashlib.sha512(payload).digest()

    monkeypatch.setattr(ohif_fetch, "download", served)
    assert ohif_fetch.install(tmp_path) is True
    assert ohif_fetch.is_installed(tmp_path)
    assert (ohif_fetch.dist_dir(tmp_path) / "index.html").is_file()
    assert ohif_fetch.install(tmp_path) is False
    assert len(calls) == 1


def test_the_fetch_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        ohif_fetch.main(["--help"])
    assert done.value.code == 0
    assert ohif_fetch.VERSION in capsys.readouterr().out
