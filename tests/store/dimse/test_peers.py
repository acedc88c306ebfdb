"""DICOM peers: settings seeds, peers stored at runtime, and every place that resolves one
(C-MOVE destinations in the listener processes, `jip dicom --peer`)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, inspect
from tests.store.dimse.support import OPEN

from jip import errors
from jip.cli.main import _register, cli
from jip.config import DicomPeer
from jip.db import Base, make_engine
from jip.migrations import alembic_config, upgrade
from jip.samples import image_series, random_patient, write_datasets
from jip.store.catalog.queries import QueryLevel
from jip.store.dimse import peers, scu

if TYPE_CHECKING:
    from tests.store.conftest import Listener

PACS = DicomPeer(ae_title="PACS", host="pacs.local", port=104)


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    yield engine
    engine.dispose()


def test_migration_0006_creates_the_peer_table_as_declared_and_downgrades(
    catalog_url: str,
) -> None:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert [d for d in diff if "dicom_peers" in repr(d)] == []
        config = alembic_config(catalog_url)
        command.downgrade(config, "0005_projects_data")
        assert not inspect(engine).has_table("dicom_peers")
        command.upgrade(config, "head")
        assert inspect(engine).has_table("dicom_peers")
    finally:
        engine.dispose()


def test_stored_peers_add_to_and_override_the_settings_seeds(engine: Engine) -> None:
    seeds = {"pacs": PACS}
    assert [(p.name, p.source) for p in peers.list_peers(engine, seeds)] == [
        ("pacs", peers.PeerSource.SETTINGS)
    ]
    viewer = DicomPeer(ae_title="VIEWER", host="10.0.0.5", port=11112)
    peers.put_peer(engine, "viewer", viewer, user="ada")
    moved = DicomPeer(ae_title="PACS2", host="pacs2.local", port=4242)
    peers.put_peer(engine, "pacs", moved, user="ada")
    listed = {p.name: p for p in peers.list_peers(engine, seeds)}
    assert listed["pacs"].peer == moved and listed["pacs"].overrides_settings
    assert listed["viewer"].source is peers.PeerSource.DATABASE
    assert peers.get_peer(engine, seeds, "pacs") == moved
    # The override hides the seed's AE title from C-MOVE too.
    assert peers.peer_for_ae_title(engine, seeds, "PACS") is None
    assert peers.peer_for_ae_title(engine, seeds, "PACS2") == moved

    peers.delete_peer(engine, seeds, "pacs")  # the seed applies again
    assert peers.get_peer(engine, seeds, "pacs") == PACS
    with pytest.raises(errors.Conflict, match=r"store\.peers"):
        peers.delete_peer(engine, seeds, "pacs")
    with pytest.raises(errors.NotFound, match="known peers: pacs, viewer"):
        peers.get_peer(engine, seeds, "nope")
    with pytest.raises(errors.NotFound):
        peers.delete_peer(engine, seeds, "nope")


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 65])
def test_peer_names_must_be_plain(name: str) -> None:
    with pytest.raises(errors.Invalid, match="peer name"):
        peers.check_name(name)


@pytest.mark.parametrize("title", ["A\\B", "   ", "", "A" * 17, "NUL\x00", "ÄE"])
def test_ae_titles_follow_the_ae_value_representation(title: str) -> None:
    with pytest.raises(ValueError, match=r"AE title|at least 1|at most 16"):
        DicomPeer(ae_title=title, host="h", port=104)
    assert DicomPeer(ae_title=" PACS ", host="h", port=104).ae_title == "PACS"


# -- every place that resolves a peer -------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    patient = random_patient(random.Random(7), 40)
    datasets = image_series(patient=patient, slices=2, rows=16, columns=16)
    return write_datasets(datasets, tmp_path_factory.mktemp("peer-study"))


def test_c_move_reaches_a_peer_added_while_the_listener_runs(
    make_listener: Callable[..., Listener], study: list[Path]
) -> None:
    source = make_listener(**OPEN)
    destination = make_listener(ae_title="LATER", **OPEN)
    assert not scu.send(source.settings, source.peer(), study).failed
    study_uid = str(pydicom.dcmread(study[0], stop_before_pixels=True).StudyInstanceUID)
    keys = {"StudyInstanceUID": study_uid}
    with pytest.raises(errors.NotFound, match="0xA801"):
        scu.move(source.settings, source.peer(), "LATER", QueryLevel.STUDY, keys)

    # Stored in the catalog the listener processes read: no restart, no settings change.
    peers.put_peer(source.runtime.engine, "later", destination.peer(), user="test")
    result = scu.move(source.settings, source.peer(), "LATER", QueryLevel.STUDY, keys)
    assert (result.status, result.completed, result.failed) == (0, 2, 0)
    assert destination.instance_count() == 2


def test_cli_resolves_peers_added_at_runtime(
    make_listener: Callable[..., Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_listener(**OPEN)
    peers.put_peer(site.runtime.engine, "added", site.peer(), user="test")
    monkeypatch.delenv("JIP_STORE__PEERS", raising=False)
    _register()
    data_dir = str(site.settings.data_dir)
    result = CliRunner().invoke(
        cli, ["--data-dir", data_dir, "dicom", "echo", "--peer", "added", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == 0
    unknown = CliRunner().invoke(cli, ["--data-dir", data_dir, "dicom", "echo", "--peer", "x"])
    assert unknown.exit_code != 0 and "known peers: added" in unknown.output


# -- what a calling AE sees (C-FIND, C-MOVE, C-GET) -----------------------------------------------
def ward(projects: list[str]) -> DicomPeer:
    return DicomPeer(ae_title="WARD", host="ward.local", port=104, projects=projects)


def test_a_calling_ae_sees_the_projects_of_its_peers(engine: Engine) -> None:
    seeds = {"pacs": PACS, "ward": ward(["alpha"])}
    lab = DicomPeer(ae_title="LAB", host="lab", port=104, projects=["beta", "alpha", "beta"])
    peers.put_peer(engine, "lab", lab, user="ada")
    assert peers.get_peer(engine, seeds, "lab").projects == ["beta", "alpha"]
    for unknown in ("all", "none"):
        assert peers.query_scope(engine, seeds, "WARD", unknown=unknown) == {"alpha"}
        assert peers.query_scope(engine, seeds, " LAB ", unknown=unknown) == {"alpha", "beta"}
        assert peers.query_scope(engine, seeds, "PACS", unknown=unknown) is None  # no projects
    assert peers.query_scope(engine, seeds, "ward", unknown="all") is None  # AE titles: case
    # Peers sharing an AE title see what any of them may.
    peers.put_peer(engine, "ward-2", ward(["gamma"]), user="ada")
    assert peers.query_scope(engine, seeds, "WARD", unknown="none") == {"alpha", "gamma"}
    peers.put_peer(engine, "ward-3", ward([]), user="ada")
    assert peers.query_scope(engine, seeds, "WARD", unknown="none") is None


def test_an_ae_that_is_no_peer_sees_all_or_nothing_as_configured(engine: Engine) -> None:
    assert peers.query_scope(engine, {"pacs": PACS}, "STRANGER", unknown="all") is None
    assert peers.query_scope(engine, {"pacs": PACS}, "STRANGER", unknown="none") == frozenset()


@pytest.mark.parametrize("name", ["Alpha", "", "a b", "-a", "x" * 65])
def test_peer_projects_are_project_names(name: str) -> None:
    with pytest.raises(ValueError, match="project name"):
        ward([name])


@pytest.mark.parametrize("host", ["no-such-host.invalid", "a..b", "x" * 70])
def test_a_peer_whose_host_does_not_resolve_is_unavailable_naming_it(
    tmp_path: Path, host: str
) -> None:
    """Hosts are taken as typed (DNS may know them later); using one that fails says so,
    also one that no lookup even starts for (an empty or over-long label)."""
    from jip.config import Settings

    settings = Settings(data_dir=tmp_path)
    nowhere = DicomPeer(ae_title="NOWHERE", host=host, port=104)
    calls: list[Callable[[], object]] = [
        lambda: scu.echo(settings, nowhere),
        lambda: scu.find(settings, nowhere, QueryLevel.STUDY, {"PatientID": "X"}),
        lambda: scu.move(settings, nowhere, "JIP", QueryLevel.STUDY, {"StudyInstanceUID": "1.2"}),
    ]
    for call in calls:
        with pytest.raises(errors.Unavailable, match=rf"NOWHERE@{re.escape(host)}:104.*host"):
            call()
