"""`jip dicom upload` and `jip cohort download` against a real site served by uvicorn
(auth on): a folder, a zip and a stray file go in, a result per file comes back; the
cohort comes out as a zip of the stored bytes."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from tests.base.support import add_user, series_datasets, tokens_for
from tests.cli import test_cohort_meta
from tests.store.dicomweb.support import part10
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.base import users as users_module
from jip.base.schema import ProjectRole
from jip.cli import cohort as cohort_cli
from jip.cli import dicom as dicom_cli
from jip.cli.main import cli
from jip.config import Settings
from jip.meta.indexer import Indexer
from jip.runtime import Runtime, build_runtime

cli.add_command(dicom_cli.dicom)  # without the other services' commands
cli.add_command(cohort_cli.cohort)
# ``login(name)``: the CLI's stored token is ``name``'s, for this module's ``site``.
login = test_cohort_meta.login


@dataclass
class Site:
    runtime: Runtime
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    cost = users_module.DEFAULT_COST
    users_module.DEFAULT_COST = users_module.ScryptCost(n=2**10, r=8, p=1)
    root = tmp_path_factory.mktemp("cli-upload")
    runtime = build_runtime(Settings(data_dir=root / "data", auth={"public_url": "http://site"}))
    add_user(runtime, "alice", projects={"liver": ProjectRole.RESEARCHER})
    add_user(runtime, "vic", projects={"liver": ProjectRole.VIEWER})
    app = build_app(runtime)
    local = TestClient(app, base_url="http://site")
    tokens = {name: tokens_for(local, name)["access_token"] for name in ("alice", "vic")}
    with serve_in_thread(app) as url:
        yield Site(runtime, url, tokens)
    runtime.close()
    users_module.DEFAULT_COST = cost


def jip(site: Site, *args: str) -> Result:
    data_dir = str(site.runtime.settings.data_dir)
    return CliRunner().invoke(cli, ["--data-dir", data_dir, *args, "--url", site.url])


def _export(folder: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A CD-like folder (two instances, a DICOMDIR, a text file) and a zip of a third."""
    first, second = (part10(ds) for ds in series_datasets(50))
    third = part10(series_datasets(51)[0])
    (folder / "cd" / "IMAGES").mkdir(parents=True)
    (folder / "cd" / "IMAGES" / "IM1").write_bytes(first)
    (folder / "cd" / "IMAGES" / "IM2").write_bytes(second)
    (folder / "cd" / "DICOMDIR").write_bytes(b"index")
    (folder / "cd" / "README.TXT").write_text("burnt by the PACS")
    archive = folder / "more.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("x/IM3", third)
    return folder / "cd", archive, {"IM1": first, "IM2": second, "IM3": third}


def test_upload_prints_a_result_per_file_and_fails_on_a_refusal(
    site: Site, login: object, tmp_path: Path
) -> None:
    login("alice")  # type: ignore[operator]
    folder, archive, _ = _export(tmp_path)
    result = jip(site, "dicom", "upload", str(folder), str(archive), "--project", "liver")
    assert result.exit_code == 1, result.output
    assert "3 stored, 0 duplicate, 1 skipped, 1 refused of 5 files" in result.output
    assert "refused cd/README.TXT" in result.output
    again = jip(site, "dicom", "upload", str(archive), "--project", "liver", "--json")
    assert again.exit_code == 0, again.output
    assert '"duplicate": 1' in again.output


def test_a_viewer_is_refused_with_the_reason(site: Site, login: object, tmp_path: Path) -> None:
    login("vic")  # type: ignore[operator]
    _, archive, _ = _export(tmp_path)
    result = jip(site, "dicom", "upload", str(archive), "--project", "liver")
    assert result.exit_code == 1
    assert "HTTP 403" in result.output


def test_cohort_download_writes_the_stored_instances(
    site: Site, login: object, tmp_path: Path
) -> None:
    login("alice")  # type: ignore[operator]
    _, archive, sent = _export(tmp_path)
    assert jip(site, "dicom", "upload", str(archive), "--project", "liver").exit_code == 0
    runtime = site.runtime
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()
    saved = jip(site, "cohort", "save", "all of liver", "--project", "liver", "--query", "{}")
    assert saved.exit_code == 0, saved.output
    target = tmp_path / "liver.zip"
    result = jip(site, "cohort", "download", "all of liver", str(target))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as downloaded:
        members = [downloaded.read(n) for n in downloaded.namelist() if n.endswith(".dcm")]
    assert sent["IM3"] in members
    missing = jip(site, "cohort", "download", "no such cohort", str(tmp_path / "x.zip"))
    assert missing.exit_code == 1 and "jip cohort list" in missing.output
    assert not (tmp_path / "x.zip").exists()
