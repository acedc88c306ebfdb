"""The federation agent as a part of `jip up` (:class:`jip.embedded.Component`).

`jip up` runs it when this site has joined a hub and ``federation.enabled`` is not false.
The composition (:mod:`jip.embedded`) hands it a function that builds the
:class:`SiteAgent` on the site's catalog engine and index, so nothing opens before
`jip up` starts it. The agent settles only the jobs the hub sent: jobs carried by hand
in bundles (:mod:`.bundles`) are answered by bundle, never posted to a hub that does
not know them.

A hub that cannot be reached does not make the site unready (DICOM, the API and the
indexer work without it): the agent keeps reconnecting with back-off, and ``jip status``
shows its last error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jip.federation.site.agent import SiteAgent
from jip.federation.site.carried import HubJobs

log = logging.getLogger(__name__)


def hub_agent(agent: SiteAgent) -> SiteAgent:
    """``agent``, settling only the jobs its hub sent (not those carried by hand)."""
    agent.book = HubJobs(agent.engine)
    return agent


class AgentComponent:
    """Runs :meth:`SiteAgent.run_forever` in a thread of `jip up`."""

    name = "federation"

    def __init__(self, open_agent: Callable[[], SiteAgent]) -> None:
        self.open_agent = open_agent
        self.agent: SiteAgent | None = None

    def start(self) -> None:
        self.agent = hub_agent(self.open_agent())
        self.agent.start()
        log.info("federation agent started", extra={"hub": self.agent.files.hub()["hub_url"]})

    def not_ready(self) -> str | None:
        return None if self.agent is not None else "the federation agent has not started"

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def describe(self) -> dict[str, object]:
        if self.agent is None:
            return {"state": "not started"}
        hub = self.agent.files.hub()
        return {
            "hub": hub.get("hub_url"),
            "site_id": hub.get("site_id"),
            "last_error": self.agent.last_error,
        }
