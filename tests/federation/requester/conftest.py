"""Fixtures of the requester's tests: the hub tests' ``running_hub`` (a fresh hub per
test, HTTPS on loopback, its clock movable) and a :class:`Network` around it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.federation.hub.conftest import running_hub
from tests.federation.hub.support import RunningHub
from tests.federation.requester.support import Network, network

__all__ = ["net", "running_hub"]


@pytest.fixture
def net(running_hub: RunningHub) -> Iterator[Network]:
    yield from network(running_hub)
