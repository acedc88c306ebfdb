"""What C-FIND, C-GET and C-MOVE show a calling AE, with dcmtk's SCUs as the peers.

One site holds two projects' data, assigned by rules on the sending modality's AE title:
``alpha`` (one patient, two studies) from MOD_A, ``beta`` (one study) from MOD_B. Peer
READ_A (stored at runtime) is bound to alpha, READ_B (in ``store.peers``) to beta; any
other calling AE is no peer, and ``store.unknown_ae_queries`` decides what it sees.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.dataset import Dataset
from tests.store.dimse.support import OPEN

from jip.config import DicomPeer
from jip.samples import image_series, random_patient, write_datasets
from jip.store.catalog.projects import SeriesProjects
from jip.store.dimse import peers, scu

if TYPE_CHECKING:
    from tests.store.conftest import Listener, StoreSCP

pytestmark = pytest.mark.dcmtk
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
NOWHERE = 9  # a peer only ever calls us here: its own port is never dialled


def two_projects(listener: Listener, folder: Path) -> tuple[list[Dataset], list[Dataset]]:
    """Send alpha's studies as MOD_A and beta's as MOD_B; rules assign them."""
    runtime = listener.runtime
    rules = SeriesProjects(runtime.engine)
    for project, modality in (("alpha", "MOD_A"), ("beta", "MOD_B")):
        runtime.identity.projects.create(project)
        rules.add_rule(project, calling_ae_title=modality)
    rng = random.Random(11)
    first, second = random_patient(rng, 1), random_patient(rng, 2)
    small = {"slices": 2, "rows": 16, "columns": 16}
    alpha = image_series(patient=first, **small) + image_series(
        patient=first, modality="MR", **small
    )
    beta = image_series(patient=second, **small)
    for modality, datasets in (("MOD_A", alpha), ("MOD_B", beta)):
        store = listener.settings.store.model_copy(update={"ae_title": modality})
        sender = listener.settings.model_copy(update={"store": store})
        paths = write_datasets(datasets, folder / modality)
        assert not scu.send(sender, listener.peer(), paths).failed
    return alpha, beta


@dataclass
class Site:
    listener: Listener
    storescp: StoreSCP  # peer "dest", a C-MOVE destination without projects
    alpha: list[Dataset]
    beta: list[Dataset]

    def dcmtk(self, tool: str, calling_ae: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a dcmtk SCU as ``calling_ae`` against the listener (Study Root)."""
        command = [tool, "-v", "-S", "-aet", calling_ae, "-aec", "JIP", *args]
        command += ["127.0.0.1", str(self.listener.port)]
        result = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, timeout=120)
        assert result.returncode == 0, result.stderr
        return result

    def find_studies(self, calling_ae: str, tmp: Path) -> set[str]:
        out = tmp / f"find-{calling_ae}"
        out.mkdir(parents=True)
        self.dcmtk("findscu", calling_ae, "-X", "-od", str(out), *keys("StudyInstanceUID"))
        return {str(pydicom.dcmread(p).StudyInstanceUID) for p in out.glob("rsp*.dcm")}

    def get_every_study(self, calling_ae: str, tmp: Path) -> set[str]:
        """C-GET every study by UID list (PS3.4 C.2.2.2.2); the SOP Instance UIDs received."""
        out = tmp / f"get-{calling_ae}"
        out.mkdir(parents=True)
        self.dcmtk("getscu", calling_ae, "-od", str(out), *keys(every_study(self)))
        return {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.iterdir()}

    def move_every_study(self, calling_ae: str) -> subprocess.CompletedProcess[str]:
        """C-MOVE every study to peer "dest" (the storescp)."""
        return self.dcmtk("movescu", calling_ae, "-aem", "DEST", *keys(every_study(self)))


def keys(*keys: str, level: str = "STUDY") -> list[str]:
    """dcmtk's ``-k`` options for the query keys at ``level``."""
    return [arg for key in (f"QueryRetrieveLevel={level}", *keys) for arg in ("-k", key)]


def studies(datasets: list[Dataset]) -> set[str]:
    return {str(ds.StudyInstanceUID) for ds in datasets}


def instances(datasets: list[Dataset]) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


def pending_moves(result: subprocess.CompletedProcess[str]) -> int:
    return len(re.findall(r"Received Move Response \d+ \(Pending\)", result.stderr))


def every_study(site: Site) -> str:
    """All the site's studies, as a list of UIDs (PS3.4 C.2.2.2.2)."""
    return "StudyInstanceUID=" + "\\".join(sorted(studies(site.alpha + site.beta)))


@pytest.fixture(scope="module")
def site(
    make_module_listener: Callable[..., Listener],
    make_storescp: Callable[..., StoreSCP],
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    storescp = make_storescp("DEST")
    seeds = {
        "dest": storescp.peer(),
        "reader-b": DicomPeer(ae_title="READ_B", host="127.0.0.1", port=NOWHERE, projects=["beta"]),
    }
    listener = make_module_listener(peers=seeds, **OPEN)
    alpha, beta = two_projects(listener, tmp_path_factory.mktemp("scoped"))
    reader = DicomPeer(ae_title="READ_A", host="127.0.0.1", port=NOWHERE, projects=["alpha"])
    peers.put_peer(listener.runtime.engine, "reader-a", reader, user="test")
    return Site(listener, storescp, alpha, beta)


def test_a_peer_bound_to_a_project_finds_only_its_studies(site: Site, tmp_path: Path) -> None:
    assert site.find_studies("READ_A", tmp_path) == studies(site.alpha)
    assert site.find_studies("READ_B", tmp_path) == studies(site.beta)  # a settings peer


def test_a_series_outside_the_peers_projects_is_not_found(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    series_uid = str(site.beta[0].SeriesInstanceUID)
    image_keys = keys(f"SeriesInstanceUID={series_uid}", "SOPInstanceUID", level="IMAGE")
    site.dcmtk("findscu", "READ_A", "-X", "-od", str(out), *image_keys)
    assert list(out.glob("rsp*.dcm")) == []


def test_an_ae_that_is_no_peer_and_a_peer_without_projects_see_everything(
    site: Site, tmp_path: Path
) -> None:
    everything = studies(site.alpha + site.beta)
    assert site.find_studies("FINDSCU", tmp_path) == everything  # store.unknown_ae_queries=all
    assert site.find_studies("DEST", tmp_path) == everything


def test_getscu_from_a_bound_peer_gets_only_its_projects_instances(
    site: Site, tmp_path: Path
) -> None:
    assert site.get_every_study("READ_A", tmp_path) == instances(site.alpha)
    assert site.get_every_study("GETSCU", tmp_path) == instances(site.alpha + site.beta)


def test_movescu_from_a_bound_peer_moves_only_its_projects_instances(site: Site) -> None:
    before = set(site.storescp.files())
    result = site.move_every_study("READ_B")
    moved = [pydicom.dcmread(p) for p in set(site.storescp.files()) - before]
    assert instances(moved) == instances(site.beta)
    assert pending_moves(result) == 2  # one C-MOVE response per sub-operation (PS3.4 C.4.2.3)


def test_a_peers_projects_changed_at_runtime_apply_at_the_next_query(
    site: Site, tmp_path: Path
) -> None:
    engine = site.listener.runtime.engine
    peer = DicomPeer(ae_title="READ_X", host="127.0.0.1", port=NOWHERE, projects=["alpha"])
    peers.put_peer(engine, "reader-x", peer, user="test")
    assert site.find_studies("READ_X", tmp_path / "1") == studies(site.alpha)
    widened = peer.model_copy(update={"projects": ["alpha", "beta"]})
    peers.put_peer(engine, "reader-x", widened, user="test")
    assert site.find_studies("READ_X", tmp_path / "2") == studies(site.alpha + site.beta)


def test_unknown_ae_queries_none_shows_other_aes_nothing(
    make_listener: Callable[..., Listener], make_storescp: Callable[..., StoreSCP], tmp_path: Path
) -> None:
    storescp = make_storescp("DEST")
    listener = make_listener(
        unknown_ae_store=True, unknown_ae_queries="none", peers={"dest": storescp.peer()}
    )
    alpha, beta = two_projects(listener, tmp_path)
    site = Site(listener, storescp, alpha, beta)
    assert listener.instance_count() == len(alpha + beta)  # C-STORE from anyone, as before
    assert site.find_studies("STRANGER", tmp_path) == set()
    assert site.get_every_study("STRANGER", tmp_path) == set()
    result = site.move_every_study("STRANGER")
    assert storescp.files() == []
    assert pending_moves(result) == 0
    # A peer is no unknown AE: without projects it sees every series.
    assert site.find_studies("DEST", tmp_path) == studies(alpha + beta)
