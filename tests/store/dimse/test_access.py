"""DIMSE closed by default: what an AE that is no peer, and a peer bound to projects, may do.

dcmtk's storescu/findscu/getscu/movescu are the callers. Two listeners: one with the
defaults (closed), one where the site admin opened ``store.unknown_ae_store`` to
onboard modalities. In both, PACS is a peer without projects (it feeds the site), WARD
a peer bound to project ``alpha``, CT_1 a store-only modality (its port is never
dialled), DEST a storescp (a C-MOVE destination).
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from jip import errors
from jip.config import DicomPeer
from jip.samples import image_series, random_patient, write_datasets
from jip.store.catalog.projects import SeriesProjects
from jip.store.dimse import scu

if TYPE_CHECKING:
    from tests.store.conftest import Listener, StoreSCP

pytestmark = pytest.mark.dcmtk
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
NOWHERE = 9  # a peer's port that is never dialled (it only calls us)
NOT_AUTHORISED = "0x0124: Refused: Not authorized"  # as storescu -d prints it


@dataclass
class Site:
    listener: Listener
    storescp: StoreSCP
    series: list[Dataset]  # sent by PACS: project "default"
    folder: Path

    def run(
        self, tool: str, calling_ae: str, *args: str, files: tuple[Path, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        command = [tool, "-v", "-aet", calling_ae, "-aec", "JIP", *args]
        command += ["127.0.0.1", str(self.listener.port), *map(str, files)]
        return subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, timeout=120)

    def storescu(self, calling_ae: str, *paths: Path) -> subprocess.CompletedProcess[str]:
        return self.run("storescu", calling_ae, "-d", files=paths)  # -d: the Error Comment

    def stored(self, ds: Dataset) -> bool:
        try:
            self.listener.runtime.catalog.instance(str(ds.SOPInstanceUID))
        except errors.NotFound:
            return False
        return True

    def write(self, ds: Dataset, name: str) -> Path:
        return write_datasets([ds], self.folder / name)[0]


def join(ds: Dataset, **changes: str) -> Dataset:
    """A copy of ``ds`` as another instance (new SOP Instance UID unless given)."""
    other = copy.deepcopy(ds)
    other.SOPInstanceUID = changes.pop("SOPInstanceUID", generate_uid())
    for keyword, value in changes.items():
        setattr(other, keyword, value)
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    return other


def make_site(
    make: Callable[..., Listener], storescp: StoreSCP, folder: Path, seed: int, **store: object
) -> Site:
    peers = {
        "pacs": DicomPeer(ae_title="PACS", host="127.0.0.1", port=NOWHERE),
        "ward": DicomPeer(ae_title="WARD", host="127.0.0.1", port=NOWHERE, projects=["alpha"]),
        "ct1": DicomPeer(ae_title="CT_1", host="127.0.0.1", port=NOWHERE),
        "dest": storescp.peer(),
    }
    listener = make(peers=peers, **store)
    listener.runtime.identity.projects.create("alpha")
    series = image_series(
        patient=random_patient(random.Random(seed), seed), slices=2, rows=16, columns=16
    )
    sender = listener.settings.model_copy(
        update={"store": listener.settings.store.model_copy(update={"ae_title": "PACS"})}
    )
    report = scu.send(sender, listener.peer(), write_datasets(series, folder / "pacs"))
    assert not report.failed
    return Site(listener, storescp, series, folder)


@pytest.fixture(scope="module")
def closed(
    make_module_listener: Callable[..., Listener],
    make_storescp: Callable[..., StoreSCP],
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    """A site with the default settings."""
    return make_site(
        make_module_listener, make_storescp("DEST"), tmp_path_factory.mktemp("closed"), 21
    )


@pytest.fixture(scope="module")
def onboarding(
    make_module_listener: Callable[..., Listener],
    make_storescp: Callable[..., StoreSCP],
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    """A site whose admin lets AEs that are no peer store (store.unknown_ae_store)."""
    folder = tmp_path_factory.mktemp("onboarding")
    return make_site(make_module_listener, make_storescp("DEST"), folder, 22, unknown_ae_store=True)


# -- closed by default ------------------------------------------------------------------
def test_echoscu_from_an_unknown_ae_is_answered(closed: Site) -> None:
    assert closed.run("echoscu", "STRANGER").returncode == 0


def test_storescu_from_an_unknown_ae_is_refused_and_nothing_is_stored(closed: Site) -> None:
    before = closed.listener.instance_count()
    new = image_series(patient=random_patient(random.Random(3), 3), slices=1, rows=16, columns=16)
    result = closed.storescu("STRANGER", closed.write(new[0], "stranger"))
    assert NOT_AUTHORISED in result.stderr + result.stdout, result.stderr
    assert "is no peer" in result.stderr + result.stdout
    assert closed.listener.instance_count() == before
    assert not closed.stored(new[0])


def test_findscu_from_an_unknown_ae_finds_nothing(closed: Site, tmp_path: Path) -> None:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    for calling_ae, expected in (("FINDSCU", 0), ("PACS", 1)):
        out = tmp_path / calling_ae
        out.mkdir()
        result = closed.run("findscu", calling_ae, "-S", "-X", "-od", str(out), *keys)
        assert result.returncode == 0, result.stderr
        assert len(list(out.glob("rsp*.dcm"))) == expected, calling_ae


def test_getscu_and_movescu_from_an_unknown_ae_retrieve_nothing(
    closed: Site, tmp_path: Path
) -> None:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={closed.series[0].StudyInstanceUID}"]  # fmt: skip
    result = closed.run("getscu", "GETSCU", "-S", "-od", str(tmp_path), *keys)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    before = closed.storescp.files()
    result = closed.run("movescu", "MOVESCU", "-S", "-aem", "DEST", *keys)
    assert result.returncode == 0, result.stderr
    assert closed.storescp.files() == before
    # The same request from a peer retrieves the study.
    got = tmp_path / "pacs"
    got.mkdir()
    assert closed.run("getscu", "PACS", "-S", "-od", str(got), *keys).returncode == 0
    assert len(list(got.iterdir())) == len(closed.series)


def test_a_store_only_peer_declared_for_a_modality_may_store(closed: Site) -> None:
    new = image_series(patient=random_patient(random.Random(4), 4), slices=1, rows=16, columns=16)
    result = closed.storescu("CT_1", closed.write(new[0], "ct1"))
    assert result.returncode == 0, result.stderr
    assert closed.stored(new[0])


# -- onboarding switch, and never into another project's series ------------------------
def test_unknown_ae_store_lets_a_modality_start_and_complete_its_series(
    onboarding: Site,
) -> None:
    series = image_series(
        patient=random_patient(random.Random(5), 5), slices=2, rows=16, columns=16
    )
    for ds in series:  # one association per instance: the second joins an existing series
        result = onboarding.storescu("NEWMOD", onboarding.write(ds, "newmod"))
        assert result.returncode == 0, result.stderr
        assert NOT_AUTHORISED not in result.stderr + result.stdout
    assert all(onboarding.stored(ds) for ds in series)


def test_an_unknown_ae_cannot_add_to_another_projects_series(onboarding: Site) -> None:
    before = onboarding.listener.instance_count()
    intruder = join(onboarding.series[0])
    result = onboarding.storescu("INTRUDER", onboarding.write(intruder, "intruder"))
    assert NOT_AUTHORISED in result.stderr + result.stdout, result.stderr
    assert not onboarding.stored(intruder)
    # Nor replace one of its instances by reusing its SOP Instance UID in a new series.
    reused = join(
        onboarding.series[1],
        SOPInstanceUID=str(onboarding.series[1].SOPInstanceUID),
        SeriesInstanceUID=generate_uid(),
    )
    result = onboarding.storescu("INTRUDER", onboarding.write(reused, "reused"))
    assert NOT_AUTHORISED in result.stderr + result.stdout, result.stderr
    assert onboarding.listener.instance_count() == before
    assert onboarding.listener.runtime.catalog.conflicts() == []


def test_a_peer_bound_to_a_project_adds_only_to_its_projects_series(onboarding: Site) -> None:
    outside = join(onboarding.series[0])
    result = onboarding.storescu("WARD", onboarding.write(outside, "ward-out"))
    assert NOT_AUTHORISED in result.stderr + result.stdout, result.stderr
    assert not onboarding.stored(outside)
    # Once the series is in alpha, WARD may add to it.
    series_uid = str(onboarding.series[0].SeriesInstanceUID)
    SeriesProjects(onboarding.listener.runtime.engine).assign(series_uid, "alpha")
    inside = join(onboarding.series[0])
    result = onboarding.storescu("WARD", onboarding.write(inside, "ward-in"))
    assert result.returncode == 0, result.stderr
    assert NOT_AUTHORISED not in result.stderr + result.stdout
    assert onboarding.stored(inside)
    # A peer without projects (the PACS) adds to any series.
    more = join(onboarding.series[1])
    assert onboarding.storescu("PACS", onboarding.write(more, "pacs-more")).returncode == 0
    assert onboarding.stored(more)
