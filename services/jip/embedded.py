"""The embedded shape: every part of one site in one foreground process tree.

`jip up` holds a list of components (DICOM listener processes, the HTTP API, the
indexer, Airflow and the auto-rules, the federation agent of a site that joined a hub). Each starts, reports readiness and stops;
shutdown goes in reverse order so in-flight work finishes before its stores close.

The DICOM listener comes first, so that a restart (after a crash, say) answers the PACS
again as soon as it can: its interpreters start before anything else and import only
what a C-STORE needs while this process recovers (:func:`jip.runtime.recover`: data
directory secured, schema current, default project present; after a restart two sqlite3
queries, Alembic loads only to migrate); they acknowledge nothing before that. Only once
they accept associations does this process build the rest of its runtime (identity) and
import the heavy libraries (SQLAlchemy, FastAPI, uvicorn, the app) and start the rest
(indexer, Airflow, the federation agent, the HTTP API), so that it takes no CPU from
them meanwhile. What a crash leaves besides the catalog needs nothing before the
listener accepts: spool files of unacknowledged transfers are removed as it starts, and
instances stored but not yet indexed wait in the catalog, the indexer's outbox.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

from jip.config import Settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from jip.federation.site import AgentComponent
    from jip.flow.component import RuleComponent
    from jip.flow.forwarder import ForwardComponent
    from jip.meta import MetaIndexer
    from jip.runtime import Runtime
    from jip.store.dimse.listener import ListenerGroup
    from jip.store.dimse.saved_queries import SavedQueryScheduler

log = logging.getLogger(__name__)


class Component(Protocol):
    """A part of the embedded platform with a lifecycle."""

    name: str

    def start(self) -> None: ...

    def not_ready(self) -> str | None:
        """None once ready, else what it is waiting for."""
        ...

    def stop(self) -> None: ...

    def describe(self) -> dict[str, object]:
        """What runs where, for `jip status`."""
        ...


# How often `jip up` rewrites its state file when a component's description changed (the
# federation agent's last error, say), so that `jip status` shows what holds now.
STATE_REFRESH_S = 5.0


@dataclass
class Platform:
    settings: Settings
    runtime: Runtime
    components: list[Component] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    def state(self, http_url: str) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "data_dir": str(self.settings.data_dir),
            "http": http_url,
            "components": {c.name: c.describe() for c in self.components},
        }

    def write_state(self, http_url: str) -> None:
        # Replaced whole, never rewritten in place: `jip status` may read it at any time.
        path = self.settings.state_file
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(self.state(http_url), indent=2))
        os.replace(partial, path)

    def keep_state_fresh(self, http_url: str, stop: threading.Event) -> None:
        """Rewrite the state file whenever what the components describe changes."""
        written = self.state(http_url)["components"]
        while not stop.wait(STATE_REFRESH_S):
            try:
                now = self.state(http_url)["components"]
                if now != written:
                    self.write_state(http_url)
                    written = now
            except Exception:  # `jip status` shows older news; `jip up` keeps serving
                log.exception("refreshing %s failed", self.settings.state_file)


class Role(enum.StrEnum):
    """Which parts one `jip up` process runs: all of them (one machine), or one service
    (a cluster Deployment, charts/jip). Every role serves probes and /metrics."""

    ALL = "all"
    STORE = "store"  # DICOMweb and the store API
    META = "meta"  # cohort search and saved cohorts
    FLOW = "flow"  # the workflow API and the auto-rules
    BASE = "base"  # identity, projects, audit and the web UI
    DICOM = "dicom"  # the DIMSE listener
    INDEXER = "indexer"  # the metadata indexer
    FEDERATION = "federation"  # the site's federation agent (calls out to the hub)
    API = "api"  # store + meta + flow + base in one process (kept for older installs)

    @property
    def router_groups(self) -> tuple[str, ...] | None:
        """The keys of :data:`jip.app.ROUTER_GROUPS` this role serves; None: every one."""
        if self in (Role.ALL, Role.API):
            return None
        return (self.value,) if self in (Role.STORE, Role.META, Role.FLOW, Role.BASE) else ()

    def runs(self, part: Role) -> bool:
        """Whether this role runs ``part``'s background work (ALL runs every part's)."""
        return self is Role.ALL or self is part


# How long `jip up` waits for its DICOM listener processes before it gives up.
LISTENER_START_S = 60.0


def embedded_components(
    settings: Settings, role: Role = Role.ALL, runtime: Runtime | None = None
) -> list[Component]:
    """The components a `jip up` process runs besides the HTTP API, in start order: the
    DICOM listener (:func:`listener_components`), then :func:`service_components`."""
    return [*listener_components(settings, role), *service_components(settings, role, runtime)]


def listener_components(settings: Settings, role: Role = Role.ALL) -> list[ListenerGroup]:
    """The DICOM listener group, where ``role`` runs one; each process builds its
    adapters with :func:`jip.runtime.build_store_runtime`."""
    if not role.runs(Role.DICOM):
        return []
    from jip.runtime import build_store_runtime
    from jip.store.dimse.listener import ListenerGroup

    return [ListenerGroup(settings, build_store_runtime)]


def service_components(
    settings: Settings, role: Role = Role.ALL, runtime: Runtime | None = None
) -> list[Component]:
    """What starts after the listener, in start order.

    The federation agent works on ``runtime``'s catalog engine and index: it is among
    them when a runtime is given (`jip up` gives its own) and the site has joined a hub.
    """
    components: list[Component] = []
    if role.runs(Role.INDEXER):
        components.append(meta_indexer(settings))
        components.append(forward_component(settings))  # one per site: sends once
    # The rules may run in several flow pods: a run is unique per (rule, series).
    if settings.flow.airflow_enabled and role.runs(Role.FLOW):
        from jip.flow.component import AirflowComponent

        if not settings.flow.airflow_url and role is Role.ALL:  # else Airflow runs elsewhere
            components.append(AirflowComponent(settings))
        components.append(rule_component(settings))
    if runtime is not None and role.runs(Role.INDEXER):
        components.append(pacs_scheduler(runtime, role))  # saved PACS queries, nightly
    if runtime is not None and role.runs(Role.FEDERATION):
        agent = federation_agent(settings, runtime)
        if agent is not None:
            components.append(agent)
    return components


def pacs_scheduler(runtime: Runtime, role: Role) -> SavedQueryScheduler:
    """Runs saved PACS queries when due, on ``runtime``'s adapters (C-GET stores through
    its ingestor); with the API in the same process it also closes the retrievals that
    the last stop cut short."""
    from jip.store.dimse.saved_queries import SavedQueryScheduler

    return SavedQueryScheduler(runtime, interrupt_all=role is Role.ALL)


def federation_agent(settings: Settings, runtime: Runtime) -> AgentComponent | None:
    """The federation agent, when this site has joined a hub and ``federation.enabled``;
    it is built on ``runtime``'s catalog engine and metadata index when `jip up` starts
    it, and settles only the hub's jobs (bundles are answered by hand)."""
    from jip.federation.site import AgentComponent, Backoff, SiteAgent, SiteFiles, StoredImages

    files = SiteFiles.of(settings.data_dir)
    fed = settings.federation
    if not fed.enabled or not files.joined:
        return None

    def open_agent() -> SiteAgent:
        backoff = Backoff(base_s=fed.backoff_base_s, cap_s=fed.backoff_cap_s)
        images = StoredImages(runtime.catalog, runtime.storage, runtime.index)
        return SiteAgent(
            runtime.engine,
            runtime.index,
            files,
            images=images,
            wait_s=fed.wait_s,
            backoff=backoff,
        )

    return AgentComponent(open_agent)


def rule_component(settings: Settings) -> RuleComponent:
    """The auto-rule evaluator; it opens its own catalog engine, storage, index and
    workflow engine (the adapters ``settings`` name) when it starts, and closes them when
    it stops."""
    from jip.backends import (
        catalog_engine_for,
        identity_for,
        index_for,
        storage_for,
        workflow_engine_for,
    )
    from jip.flow.component import RuleAdapters, RuleComponent

    def open_adapters() -> RuleAdapters:
        db = catalog_engine_for(settings.resolved_catalog_url)
        return RuleAdapters(
            db=db,
            storage=storage_for(settings.resolved_storage_url, settings),
            index=index_for(settings.resolved_index_url),
            workflow_engine=workflow_engine_for(settings),
            identity=identity_for(settings, db),  # issues the token of each run it starts
        )

    return RuleComponent(settings, open_adapters)


def forward_component(settings: Settings) -> ForwardComponent:
    """The forwarder (forwarding rules, retries, dead letters); it opens its own catalog
    engine, storage and index, and sends with store's sender."""
    from jip.backends import catalog_engine_for, index_for, storage_for
    from jip.flow.forwarder import ForwardComponent, Forwarder
    from jip.meta import SeriesMatcher
    from jip.store import Catalog
    from jip.store.forward_send import StoredSeriesSender

    def open_forwarder() -> tuple[Forwarder, Callable[[], None]]:
        db = catalog_engine_for(settings.resolved_catalog_url)
        storage = storage_for(settings.resolved_storage_url, settings)
        index = index_for(settings.resolved_index_url)
        catalog = Catalog(db)
        forwarder = Forwarder(
            db=db,
            matcher=SeriesMatcher(catalog=catalog, storage=storage, index=index),
            sender=StoredSeriesSender(settings=settings, catalog=catalog, storage=storage),
            settings=settings.forward,
            quiet_period_s=settings.meta.series_quiet_period_s,
        )

        def close() -> None:
            index.close()
            db.dispose()

        return forwarder, close

    return ForwardComponent(open_forwarder, settings.forward.interval_s)


def meta_indexer(settings: Settings) -> MetaIndexer:
    """The metadata indexer component; it opens its own catalog engine, storage and index
    (the adapters ``settings`` name) when it starts, and closes them when it stops."""
    from jip.backends import catalog_engine_for, index_for, storage_for
    from jip.meta import IndexerAdapters, MetaIndexer

    def open_adapters() -> IndexerAdapters:
        return IndexerAdapters(
            engine=catalog_engine_for(settings.resolved_catalog_url),
            storage=storage_for(settings.resolved_storage_url, settings),
            index=index_for(settings.resolved_index_url),
        )

    return MetaIndexer(settings, open_adapters)


def run(settings: Settings, announce: Callable[[str], None], role: Role = Role.ALL) -> None:
    """Start everything, the DICOM listener first; serve until SIGINT/SIGTERM, then stop
    in reverse order.

    ``announce`` shows the one-time admin password of a first start on the terminal,
    never in the logs.
    """
    # Everything this process and its children (Airflow, listeners) create is the JIP
    # user's alone: catalog, index, WAL files, keys, work files hold PHI and secrets.
    os.umask(0o077)
    with contextlib.ExitStack() as running:  # unwinds in reverse order of starting
        running.callback(log.info, "JIP stopped")  # also when SIGTERM ends server.run()
        running.callback(_forget_state, settings)
        listeners = listener_components(settings, role)
        if not listeners:  # `jip up` may have started one before it knew the role
            from jip.store.dimse.listener import discard_early

            discard_early()
        for group in listeners:
            group.prepare()  # its interpreters import while the catalog is recovered
            running.callback(_stop, group)
        from jip.runtime import build_runtime, recover

        recover(settings)
        for group in listeners:
            log.info("starting %s", group.name)
            group.start()  # the catalog is current: from here on C-STORE is acknowledged
        for group in listeners:  # idle meanwhile: the listener has the CPU to itself
            group.wait_ready(LISTENER_START_S)
        runtime = build_runtime(settings, migrate=False)
        running.callback(runtime.close)
        _serve(settings, runtime, listeners, announce, role, running)


def migrate(settings: Settings) -> None:
    """Bring the catalog schema to the newest revision once, before any pod starts (the
    chart's hook Job); it also creates the default project."""
    from jip.runtime import build_runtime

    build_runtime(settings).close()


def _serve(
    settings: Settings,
    runtime: Runtime,
    listeners: list[ListenerGroup],
    announce: Callable[[str], None],
    role: Role,
    running: contextlib.ExitStack,
) -> None:
    """Start what comes after the listener and serve HTTP until SIGINT/SIGTERM; what it
    starts is stopped by ``running``."""
    import uvicorn

    from jip.app import build_app

    one_time = runtime.identity.users.bootstrap_admin(settings.auth.admin_password)
    if one_time:
        announce(
            f"First start: created user 'admin' with one-time password {one_time}\n"
            "Log in with `jip login` and change it with `jip user passwd admin`."
        )
    settings = with_service_token(settings, runtime, purpose=f"jip-up:{role.value}")
    services = service_components(settings, role, runtime)
    platform = Platform(settings, runtime, [*listeners, *services])
    app = build_app(
        runtime, readiness=[c.not_ready for c in platform.components], groups=role.router_groups
    )
    server = uvicorn.Server(http_server_config(settings, app))
    for component in services:
        log.info("starting %s", component.name)
        component.start()
        running.callback(_stop, component)
    host = settings.http_host
    http_url = f"http://{f'[{host}]' if ':' in host else host}:{settings.http_port}"
    platform.write_state(http_url)
    stop_refresh = threading.Event()
    refresher = threading.Thread(
        target=platform.keep_state_fresh, args=(http_url, stop_refresh), daemon=True
    )
    refresher.start()
    running.callback(refresher.join, timeout=10)
    running.callback(stop_refresh.set)
    log.info("JIP is up", extra={"http": http_url, "data_dir": str(settings.data_dir)})
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default
    # handler that would end the process here, before the components are stopped.
    signal.signal(signal.SIGTERM, _exit_normally)
    server.run()  # returns after SIGINT/SIGTERM (uvicorn installs the handlers)


def _forget_state(settings: Settings) -> None:
    """Remove the state file `jip status` reads, where it is this process's."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(settings.state_file.read_text())["pid"] == os.getpid():
            settings.state_file.unlink()


def _stop(component: Component) -> None:
    log.info("stopping %s", component.name)
    try:
        component.stop()
    except Exception:
        log.exception("stopping %s failed", component.name)


def http_server_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """uvicorn's settings for the site's API.

    uvicorn's own proxy-header handling is off: the app believes X-Forwarded-* only from
    ``http.trusted_proxies`` (:class:`jip.edge.TrustedProxies`), so a caller cannot
    choose the address the login throttle counts and the audit log records.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
    )


# A workflow may wait days for a human step; `jip up` mints a fresh token at each start
# and the one minted at the previous start (for the same purpose) is revoked.
SERVICE_TOKEN_TTL_S = 30 * 24 * 3600


def with_service_token(
    settings: Settings, runtime: Runtime, *, purpose: str = "jip-up"
) -> Settings:
    """Settings whose ``api_token`` lets Airflow tasks and auto-rules call the API.

    Only where auth is on, JIP is its own issuer and no token was configured (a cluster
    passes ``JIP_API_TOKEN`` from a Secret instead). One token per ``purpose`` is live.
    """
    issuer = runtime.identity.issuer
    if not settings.auth.enabled or settings.api_token is not None or issuer is None:
        return settings
    from jip.base.service_tokens import service_token

    token = service_token(issuer, ttl_s=SERVICE_TOKEN_TTL_S, purpose=purpose)
    return settings.model_copy(update={"api_token": SecretStr(token)})


def _exit_normally(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def install_stop_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGINT/SIGTERM (for processes that run no uvicorn server)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
