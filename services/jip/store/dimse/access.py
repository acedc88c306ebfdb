"""Who calls, and what it may store: the calling AE title against the site's DICOM peers.

DIMSE has no login, so the calling AE title is the caller (as in Orthanc's and
dcm4chee's per-AE rules). A site declares each AE it knows as a peer (``store.peers``
or Admin → DICOM peers): a PACS, a workstation, a modality that only stores (its port
is dialled only when it is named as a C-MOVE destination). Closed by default
(DESIGN.md, "Trust boundaries"):

- an AE that is no peer may C-ECHO; its C-FIND, C-MOVE and C-GET see what
  ``store.unknown_ae_queries`` says (``none`` by default: no matches, no
  sub-operations, see :func:`jip.store.dimse.peers.query_scope`); it may C-STORE only
  when ``store.unknown_ae_store`` is on, and then only start series of its own and add
  to those;
- a peer without ``projects`` is trusted with every series (the PACS that feeds the
  site), so it may add to any series;
- a peer with ``projects`` may add to the series of those projects and to the series
  it started itself.

"Started itself" means every instance of the series came from this calling AE title:
the projects the series went to are chosen by the assignment rules, not by the sender,
so a sender bound to a project still completes the series it is sending. An instance
whose SOP Instance UID is already stored counts as touching that instance's series
too, so a known UID of another project's series is refused before the duplicate policy
could replace it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, select

from jip.config import DicomPeer
from jip.store.catalog.projects import Scope
from jip.store.catalog.tables import Instance, SeriesProject
from jip.store.dicom_file import InstanceHeader
from jip.store.dimse import peers

log = logging.getLogger(__name__)

# One comment for every refusal by project, so it tells nothing of which UID is taken.
NOT_YOURS = "no right to store into this series or instance"


@dataclass(frozen=True)
class Caller:
    """A calling AE title and the peers declared with it (none: an unknown AE)."""

    ae_title: str
    peers: tuple[DicomPeer, ...] = ()

    @property
    def is_peer(self) -> bool:
        return bool(self.peers)

    @property
    def projects(self) -> Scope:
        """The projects of its peers; None for every project (a peer without projects)."""
        if any(not peer.projects for peer in self.peers):
            return None
        return frozenset(name for peer in self.peers for name in peer.projects)


def identify(engine: Engine, seeds: peers.Seeds, ae_title: str) -> Caller:
    """The caller behind ``ae_title``, read at each association (peers change at runtime)."""
    title = ae_title.strip()
    return Caller(title, tuple(peers.peers_with_ae_title(engine, seeds, title)))


def not_a_peer(ae_title: str) -> str:
    """Why an unknown AE may not store, and what the site admin can do (an Error
    Comment: at most 64 characters with a 16-character AE title)."""
    return f"AE {ae_title} is no peer: declare it in store.peers"


class StoreAccess:
    """Decides whether a C-STORE from a caller may go in, before anything is stored."""

    def __init__(self, engine: Engine, *, unknown_ae_store: bool) -> None:
        self.engine = engine
        self.unknown_ae_store = unknown_ae_store

    def refusal(self, caller: Caller, header: InstanceHeader) -> str | None:
        """None if ``caller`` may store the instance ``header`` describes, else why not."""
        if not caller.is_peer and not self.unknown_ae_store:
            return not_a_peer(caller.ae_title)
        projects = caller.projects if caller.is_peer else frozenset()
        if projects is None:
            return None
        for series_uid in self._touched_series(header):
            if not self._may_add_to(series_uid, caller.ae_title, projects):
                log.warning(
                    "C-STORE into a series of another project refused",
                    extra={"calling_ae": caller.ae_title, "series_instance_uid": series_uid},
                )
                return NOT_YOURS
        return None

    def _touched_series(self, header: InstanceHeader) -> set[str]:
        """The instance's series and the series of a stored instance with its UID."""
        known = select(Instance.series_instance_uid).where(
            Instance.sop_instance_uid == header.sop_instance_uid
        )
        with self.engine.connect() as conn:
            return {header.series_instance_uid, *conn.execute(known).scalars()}

    def _may_add_to(self, series_uid: str, ae_title: str, projects: frozenset[str]) -> bool:
        of_series = select(Instance.sop_instance_uid).where(
            Instance.series_instance_uid == series_uid
        )
        with self.engine.connect() as conn:
            if conn.execute(of_series.limit(1)).first() is None:
                return True  # a new series: it goes where the assignment rules say
            if projects:
                in_projects = select(SeriesProject.project).where(
                    SeriesProject.series_instance_uid == series_uid,
                    SeriesProject.project.in_(sorted(projects)),
                )
                if conn.execute(in_projects.limit(1)).first() is not None:
                    return True
            others = of_series.where(Instance.calling_ae_title != ae_title[:16])
            return conn.execute(others.limit(1)).first() is None
