"""One typed settings object for every service.

Values come, lowest priority first, from the defaults below, an optional YAML file
(``JIP_CONFIG=/path/jip.yaml``), ``JIP_*`` environment variables (nested fields use
``__``: ``JIP_STORE__AE_TITLE=PACS``) and finally keyword arguments (tests, CLI flags).
Nothing else in the code base reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

# The access sections live in jip.config_access; re-exported, so read them from here too.
from jip.config_access import AuthSettings as AuthSettings
from jip.config_access import HttpSettings as HttpSettings
from jip.config_access import KeycloakSettings as KeycloakSettings
from jip.config_access import MetricsSettings as MetricsSettings
from jip.config_access import SettingsModel

# A project name, as BASE checks it (jip.base.projects).
PROJECT_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# What DIMSE queries from a calling AE that is no peer see (StoreSettings).
UnknownAeQueries = Literal["all", "none"]


class DicomPeer(SettingsModel):
    """A remote DICOM application entity (hospital PACS, modality, viewer)."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:%\[\]-]+$")
    port: int = Field(ge=1, le=65535)
    # The projects whose series this AE's C-FIND, C-MOVE and C-GET see when it calls
    # us; empty: every series (DIMSE has no login: the calling AE title is the caller).
    projects: list[str] = Field(default_factory=list, max_length=100)
    # How studies are retrieved from it (the PACS page, saved queries): "move" asks it to
    # C-MOVE to our AE (it must know our AE title, host and port); "get" fetches them on
    # our own association (C-GET), for a peer that has no route to us.
    retrieve: Literal["move", "get"] = "move"

    @field_validator("projects")
    @classmethod
    def _project_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(PROJECT_NAME, name):
                raise ValueError(f"project name {name!r}: lower-case letters, digits, '_', '-'")
        return list(dict.fromkeys(value))

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        # PS3.5 6.2, VR AE: default character repertoire without backslash and control
        # characters; leading and trailing spaces are not significant.
        if any(ch == "\\" or ord(ch) < 0x20 or ord(ch) > 0x7E for ch in value):
            raise ValueError("AE title: no backslash, control or non-ASCII characters")
        if not value.strip():
            raise ValueError("AE title: must not be all spaces")
        return value.strip()


class DicomWebSettings(SettingsModel):
    """Bounds on the work one DICOMweb request may ask for (any logged-in user can)."""

    # Largest rendered image, width x height of the viewport (4096 x 4096: a mammogram
    # at full size); a larger viewport is a 400.
    max_rendered_pixels: int = Field(default=4096 * 4096, ge=1)
    # Most distinct frame numbers in one frames/{list} request (duplicates count once);
    # /pixeldata returns every frame.
    max_frames_per_request: int = Field(default=1000, ge=1)
    # Most parts in one STOW-RS request (413 beyond); an empty part fails unparsed.
    max_stow_parts: int = Field(default=10_000, ge=1)


class PacsSettings(SettingsModel):
    """The PACS page and saved queries (query and retrieve from a DICOM peer)."""

    # How often the scheduler in `jip up` looks for saved queries that are due.
    scheduler_interval_s: float = Field(default=30.0, gt=0)
    # Most studies one C-FIND may list (the rest are dropped, and the page says so).
    max_query_results: int = Field(default=500, ge=1, le=10_000)


class StoreSettings(SettingsModel):
    """DIMSE listener, DICOMweb and the duplicate policy."""

    ae_title: str = Field(default="JIP", max_length=16)
    # Loopback by default, like HTTP; JIP_STORE__DICOM_HOST=0.0.0.0 opens it to the network.
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    # Non-empty: only these calling AEs may associate at all (A-ASSOCIATE-RJ otherwise).
    allowed_calling_aets: list[str] = Field(default_factory=list)
    # What C-FIND, C-MOVE and C-GET from a calling AE that is no peer see: nothing (no
    # matches, no sub-operations), or every series. Peers: DicomPeer.projects.
    unknown_ae_queries: UnknownAeQueries = "none"
    # Whether a calling AE that is no peer may C-STORE (onboarding modalities); it may
    # then only start series and add to the series it started (jip.store.dimse.access).
    unknown_ae_store: bool = False
    # Associations at once from one IP address, and from one calling AE title, per
    # listener process; counted at accept, before the association request is read.
    max_associations_per_address: int = Field(default=8, ge=1)
    max_associations_per_ae: int = Field(default=8, ge=1)
    # Deadlines: the A-ASSOCIATE-RQ must arrive whole within association_timeout_s of
    # the connection, every later PDU within pdu_timeout_s of its first byte;
    # network_timeout_s is the idle timeout (no PDU at all).
    association_timeout_s: float = Field(default=10.0, gt=0)
    pdu_timeout_s: float = Field(default=60.0, gt=0)
    # Named remote AEs: C-MOVE destinations and SCU targets (`jip dicom find --peer pacs`).
    peers: dict[str, DicomPeer] = Field(default_factory=dict)
    # Listener processes sharing the port with SO_REUSEPORT; 0 means one per CPU core.
    listener_processes: int = Field(default=0, ge=0, le=64)
    max_associations: int = Field(default=32, ge=1)
    # A known SOP Instance UID with different bytes: keep the first (and record a
    # conflict) or overwrite it.
    duplicate_policy: Literal["keep_first", "overwrite"] = "keep_first"
    # Largest accepted STOW-RS request body.
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1)
    network_timeout_s: float = Field(default=60.0, gt=0)
    # The project of a new series that no assignment rule matches (created on start).
    default_project: str = Field(default="default", pattern=PROJECT_NAME)
    dicomweb: DicomWebSettings = Field(default_factory=DicomWebSettings)
    pacs: PacsSettings = Field(default_factory=PacsSettings)


class MetaSettings(SettingsModel):
    """Metadata extraction and the index."""

    index_interval_s: float = Field(default=0.5, gt=0)
    index_batch_size: int = Field(default=500, ge=1)
    # A series with no new instance for this long is complete (auto-rules fire).
    series_quiet_period_s: float = Field(default=60.0, ge=0)
    # Bounds on one cohort search (400 naming the setting beyond them): clauses over
    # every bool level, values in all (a terms list counts each), wildcard/prefix pattern
    # and other value lengths in characters, named aggregations per request.
    max_query_clauses: int = Field(default=1024, ge=1, le=65536)
    max_query_terms: int = Field(default=65536, ge=1, le=1_000_000)
    max_pattern_length: int = Field(default=256, ge=1, le=10_000)
    max_value_length: int = Field(default=1024, ge=1, le=32_766)
    max_aggregations: int = Field(default=100, ge=1, le=1000)


class GpuSettings(SettingsModel):
    """Where operator pods that ask for GPUs (``gpu: N``) go (charts/jip ``operators.gpu``)."""

    # The extended resource the device plugin offers (NVIDIA's by default).
    resource: str = "nvidia.com/gpu"
    # Labels of the GPU node pool, and the taints its nodes carry, as Kubernetes writes them.
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str | int]] = Field(default_factory=list)


class FlowApiSettings(SettingsModel):
    """How workflow tasks and operator pods reach the site's services, and what the flow
    API takes from them (charts/jip sets the in-cluster Service URLs)."""

    # DICOMweb, /api/store and /api/dicom; unset: api_url (or the site's own URL).
    store_url: str | None = None
    # /api/flow (results, reviews); unset: api_url (or the site's own URL).
    flow_url: str | None = None
    # The largest result file a task may upload (PUT /api/flow/runs/{id}/files/...).
    max_file_bytes: int = Field(default=4 * 1024**3, ge=1)


class FlowSettings(SettingsModel):
    """Airflow and the operator runner."""

    airflow_enabled: bool = True
    airflow_host: str = "127.0.0.1"
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    # Defaults to <data_dir>/airflow when unset.
    airflow_home: Path | None = None
    airflow_url: str | None = None  # an external Airflow (cluster shape)
    airflow_username: str = "jip"
    airflow_password: str | None = None
    dags_folder: Path | None = None  # defaults to the repository's dags/
    runner: Literal["subprocess", "container", "kubernetes"] = "subprocess"
    container_engine: str = "podman"
    max_parallel_series: int = Field(default=4, ge=1)
    operators_dir: Path | None = None  # defaults to the repository's operators/
    # Where tasks stage operator input and output; defaults to <data_dir>/flow-work.
    work_dir: Path | None = None
    # Operator images are <image_registry>jip/<operator>:<version> (e.g. "registry.local/").
    image_registry: str = ""
    # The image lock `make images` writes (build/images.json; the offline install's
    # images.json): operator pods then start <image_registry>jip/<operator>@<digest>,
    # and an operator the lock does not know fails its task instead of running a tag.
    image_lock: Path | None = None
    # Limits per operator run (container and pod runners); None leaves them unset.
    operator_cpus: float | None = Field(default=None, gt=0)
    operator_memory: str | None = None  # "4Gi" (Kubernetes) / "4g" (podman, docker)
    operator_timeout_s: float = Field(default=6 * 3600.0, gt=0)
    kubernetes_namespace: str = "jip"
    # A ReadWriteMany PVC holding work_dir for Airflow workers and operator pods; unset,
    # pods stage input into an emptyDir through the store's API and push their output.
    kubernetes_work_pvc: str | None = None
    kubernetes_stage_image: str = "jip/jip:0.1.0"
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    api: FlowApiSettings = Field(default_factory=FlowApiSettings)
    # Auto-rules: how often newly complete series are checked.
    rule_interval_s: float = Field(default=5.0, gt=0)
    # Human steps: how often a waiting task asks whether it was marked done.
    review_poll_s: float = Field(default=5.0, gt=0)
    # How long a human step waits for its person. A run's own token lives
    # operator_timeout_s per operator step plus this, and ends with the run.
    review_window_s: float = Field(default=7 * 86400.0, gt=0)
    # Subprocess runner: operators run as this unprivileged user, never as JIP's (they
    # must not read the signing key, the catalog or JIP's environment). Unset: "nobody"
    # when JIP runs as root; otherwise the subprocess runner refuses to start operators
    # unless operator_isolation is "none" (an explicit, logged opt-out for a laptop).
    operator_user: str | None = None
    operator_isolation: Literal["user", "none"] = "user"


class OhifSettings(SettingsModel):
    """The OHIF viewer served at ``/viewer`` (jip.ui.ohif), fetched by `make install`."""

    # Serve the viewer and link series to it (when its files are there).
    enabled: bool = True
    # Where `python -m jip.ui.ohif_fetch` puts the pinned @ohif/app: <dir>/<version>/.
    dir: Path = Field(default_factory=lambda: Path(sys.prefix) / "share" / "jip" / "ohif")


class UiSettings(SettingsModel):
    """The web UI."""

    # A link from the series page to an external viewer; {study} and {series} are
    # replaced by the UIDs (OHIF: "/ohif/viewer?StudyInstanceUIDs={study}"). None: no link.
    viewer_url_template: str | None = None
    # The OHIF viewer at /viewer; the template above, when set, wins for the links.
    ohif: OhifSettings = Field(default_factory=OhifSettings)

    @field_validator("viewer_url_template")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            value.format(study="", series="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{study}} and {{series}} may be used ({exc})") from None
        return value


class FederationSettings(SettingsModel):
    """The site's federation agent in `jip up` (`jip fed join` first)."""

    # Run the agent when this site has joined a hub; false keeps it off (jobs wait at the
    # hub, `jip fed agent --once` still polls by hand).
    enabled: bool = True
    # Long-poll: how long one request waits at the hub for work (the hub caps it at 30).
    wait_s: float = Field(default=25.0, ge=0, le=30)
    # Reconnecting after a failure: uniform in [0, min(cap, base * 2^failures)] seconds.
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=60.0, gt=0)
    # A researcher's home (`jip fed researcher init --home`) whose federated studies the
    # UI's "Federated studies" page shows; unset: the page says how to set it.
    researcher_home: Path | None = None


class DicomWebPeer(SettingsModel):
    """A DICOMweb endpoint the site sends to with STOW-RS (PS3.18 10.5): another archive,
    a cloud store; ``token`` is sent as a bearer token when set."""

    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://")
    token: SecretStr | None = None


class ForwardSettings(SettingsModel):
    """Sending series to peers (`POST /api/dicom/send`) and the forwarding rules."""

    # Who may send besides site admins (usernames); a run may send when who started it may.
    senders: list[str] = Field(default_factory=list)
    # Peers reached by STOW-RS instead of C-STORE, by name (beside store.peers).
    dicomweb_peers: dict[str, DicomWebPeer] = Field(default_factory=dict)
    # How often the forwarder looks for new matching series and for sends that are due.
    interval_s: float = Field(default=5.0, gt=0)
    # A series failing this often goes to the dead-letter list for the admin.
    max_attempts: int = Field(default=5, ge=1, le=100)
    # Retry n waits min(cap, base * 2^(n-1)) seconds.
    backoff_base_s: float = Field(default=30.0, ge=0)
    backoff_cap_s: float = Field(default=3600.0, ge=0)


class Settings(BaseSettings):
    """Every URL, port, AE title and path of one JIP site."""

    model_config = SettingsConfigDict(
        env_prefix="JIP_",
        env_nested_delimiter="__",
        extra="ignore",
        defer_build=True,  # as every section (jip.config_access.SettingsModel)
    )

    data_dir: Path = Path("jip-data")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # Unset URLs derive from data_dir: file://<data_dir>/blobs, sqlite:///<data_dir>/catalog.db
    storage_url: str | None = None
    catalog_url: str | None = None
    index_url: str | None = None
    results_url: str | None = None
    # Credentials for s3:// storage and result URLs (MinIO, any S3-compatible store).
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    # Where workflow tasks and the CLI reach this site's HTTP API (JIP_API_URL), and a
    # bearer token for it (JIP_API_TOKEN); unset URL: http://<http_host>:<http_port>.
    api_url: str | None = None
    api_token: SecretStr | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    store: StoreSettings = Field(default_factory=StoreSettings)
    meta: MetaSettings = Field(default_factory=MetaSettings)
    flow: FlowSettings = Field(default_factory=FlowSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    keycloak: KeycloakSettings = Field(default_factory=KeycloakSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("JIP_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # Derived locations: one place decides where embedded-shape data lives.
    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "blobs").as_uri()

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def resolved_index_url(self) -> str:
        return self.index_url or f"sqlite:///{self.data_dir / 'index.db'}"

    @property
    def resolved_results_url(self) -> str:
        return self.results_url or (self.data_dir / "results").as_uri()

    @property
    def resolved_airflow_home(self) -> Path:
        return self.flow.airflow_home or self.data_dir / "airflow"

    @property
    def resolved_flow_work_dir(self) -> Path:
        return self.flow.work_dir or self.data_dir / "flow-work"

    @property
    def state_file(self) -> Path:
        """Where `jip up` writes what runs where, for `jip status`."""
        return self.data_dir / "jip-up.json"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests build ``Settings(...)`` instead)."""
    return Settings()


# What a client on this machine reaches when a server listens on every address.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def reachable_host(bind_host: str) -> str:
    """The host, ready for a URL, that reaches a server bound to ``bind_host`` from this
    machine: a wildcard address becomes loopback, an IPv6 literal gets its brackets."""
    host = _WILDCARD_HOSTS.get(bind_host, bind_host)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
