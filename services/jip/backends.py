"""The one place where settings pick an adapter for each port.

``file://`` and ``s3://`` pick blob storage (DICOM files and result files),
``sqlite://`` and ``postgresql://`` the catalog, ``sqlite://`` and ``http(s)://`` the
metadata index; ``flow.runner`` the operator runner (subprocess, container, Kubernetes
pod); the workflow engine is Airflow's REST API; ``auth.issuer_url`` picks the identity
(embedded issuer or Keycloak, :func:`identity_for`). No other module knows
which deployment shape it runs in. This module sits above the services (it imports their
adapters); services get adapters passed in, never call it, except the Airflow worker's
task process, which is its own composition root (see pyproject's import contracts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from sqlalchemy import Engine

from jip.config import Settings
from jip.db import make_engine
from jip.errors import Invalid
from jip.store.storage.port import BlobStorage

if TYPE_CHECKING:
    from jip.base import Authenticator, Identity, SigningKeys, TokenLedger
    from jip.flow.engine import WorkflowEngine
    from jip.flow.worker.runner import OperatorRunner
    from jip.meta.index import MetaIndex


def storage_for(url: str, settings: Settings) -> BlobStorage:
    """Blob storage for ``file:///path`` or ``s3://bucket/prefix?endpoint=host:port``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from jip.store.storage.file import FileStorage

        return FileStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from jip.store.storage.s3 import S3Storage

        return S3Storage.from_url(
            url,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value()
            if settings.s3_secret_key
            else None,
        )
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")


def catalog_engine_for(url: str) -> Engine:
    """Catalog engine for ``sqlite:///path`` or ``postgresql://user@host/db``."""
    if url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        return make_engine(url)
    raise ValueError(f"unsupported catalog URL {url!r}: use sqlite:///path or postgresql://…")


def index_for(url: str) -> MetaIndex:
    """Metadata index for ``sqlite:///path`` or ``https://user:password@opensearch:9200``."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from jip.meta.index_sqlite import SqliteIndex

        return SqliteIndex.from_url(url)
    if scheme in ("http", "https"):
        from jip.meta.index_opensearch import OpenSearchIndex

        index = OpenSearchIndex.from_url(url)
        index.ensure_index()
        return index
    raise ValueError(f"unsupported index URL {url!r}: use sqlite:///path or https://opensearch…")


def results_storage_for(settings: Settings) -> BlobStorage:
    """The result store of workflow runs (``JIP_RESULTS_URL``, default beside the blobs)."""
    return storage_for(settings.resolved_results_url, settings)


def workflow_engine_for(settings: Settings) -> WorkflowEngine:
    """The workflow engine: Airflow 3 through its REST API, in both shapes."""
    from jip.flow.engine_airflow import AirflowEngine

    return AirflowEngine.from_settings(settings)


def runner_for(settings: Settings, *, kubernetes_api: Any = None) -> OperatorRunner:
    """The runner ``settings.flow.runner`` names; ``kubernetes_api`` a CoreV1Api (tests)."""
    flow = settings.flow
    if flow.runner == "subprocess":
        from jip.flow.worker.runner_subprocess import SubprocessRunner

        return SubprocessRunner.from_settings(settings)  # as flow.operator_user
    if flow.runner == "container":
        from jip.flow.worker.runner_container import ContainerRunner

        return ContainerRunner(
            engine=flow.container_engine,
            registry=flow.image_registry,
            cpus=flow.operator_cpus,
            memory=flow.operator_memory,
            timeout_s=flow.operator_timeout_s,
        )
    if flow.runner == "kubernetes":
        from jip.flow.worker.runner_kubernetes import KubernetesRunner, PodSettings

        return KubernetesRunner(
            api=kubernetes_api,
            pod=PodSettings.from_settings(settings),
            timeout_s=flow.operator_timeout_s,
        )
    raise Invalid(f"unknown runner {flow.runner!r}: use subprocess, container or kubernetes")


def identity_for(settings: Settings, engine: Engine) -> Identity:
    """Users, projects, audit log and token checks over the catalog ``engine``: with the
    embedded issuer, unless ``auth.issuer_url`` names an external one (Keycloak).

    The signing key is read (or created) only when a token is first issued or checked.
    """
    from jip.base import (
        AuditLog,
        Identity,
        Issuer,
        Projects,
        RunTokens,
        SigningKeys,
        TokenLedger,
        Users,
        site_url,
    )
    from jip.base.tokens import TokenSigner

    users = Users(engine)
    audit = AuditLog(engine)
    keys = SigningKeys(settings.data_dir / "keys")
    issuer_id = site_url(settings)
    issuer = None
    if not settings.auth.issuer_url:
        issuer = Issuer(
            issuer=issuer_id,
            settings=settings.auth,
            engine=engine,
            users=users,
            audit=audit,
            keys=keys,
        )
    ledger = TokenLedger(engine)
    # A run's token is signed with the site's own key in both shapes.
    run_signer = TokenSigner(issuer=issuer_id, settings=settings.auth, keys=keys)
    return Identity(
        users=users,
        projects=Projects(engine),
        audit=audit,
        authenticator=authenticator_for(settings, keys, issuer_id, ledger=ledger),
        issuer=issuer,
        run_tokens=RunTokens(signer=run_signer, ledger=ledger),
    )


def authenticator_for(
    settings: Settings, keys: SigningKeys, issuer: str, *, ledger: TokenLedger | None = None
) -> Authenticator:
    """The embedded issuer's key unless ``auth.issuer_url`` names an external issuer;
    tokens signed with the site's key (run tokens in both shapes) checked by ``ledger``."""
    from jip.base import Authenticator, JwksVerifier, LocalKeyVerifier, TokenVerifier

    auth = settings.auth
    verifier: TokenVerifier
    site = LocalKeyVerifier(keys, issuer=issuer, audience=auth.audience)
    if auth.issuer_url:
        from jip.base.keycloak_sessions import sessions_for

        verifier = JwksVerifier(
            issuer=auth.issuer_url,
            audience=auth.audience,
            jwks_url=auth.jwks_url,
            sessions=sessions_for(settings),
        )
    else:
        verifier = site
    return Authenticator(
        enabled=auth.enabled,
        verifier=verifier,
        site=site,
        ledger=ledger,
        local_users=not auth.issuer_url,
    )
