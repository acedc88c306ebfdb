"""The researcher's home: keys, the hub to talk to, and the jobs sent from here.

Results are sealed to the researcher's X25519 key, so the private half lives here and
nowhere else; losing this folder loses every result not yet opened. One folder (0700),
each file 0600:

- ``box.key``: the X25519 key pair results are sealed to (base64 JSON);
- ``publisher.key``: optionally, an Ed25519 workflow publisher key (`jip fed workflow
  keygen`);
- ``hub.json``: the hub's URL; ``token``: the researcher's bearer token; ``ca.pem``: the
  hub's CA certificate, pinned (no other CA is trusted for the hub);
- ``workflows/<name>.json``: signed workflow references (`jip fed workflow sign`);
- ``jobs.json``: every job submitted from here (spec, title, the Levene comparisons and
  the rounds posted), so listing and reporting need no hub.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jip.errors import Conflict, Invalid, NotFound
from jip.federation.crypto import (
    BoxKeyPair,
    SigningKeyPair,
    decode_bytes,
    encode_key,
    generate_box_keys,
    key_id,
)
from jip.federation.private_files import write_private
from jip.federation.protocol import JobSpec, RoundPlan, WorkflowRef

DEFAULT_HOME = Path("~/.jip/federation")
HOME_ENV = "JIP_FED_HOME"
KEY_FORMAT = "jip.federation.key"


def default_home() -> Path:
    """``$JIP_FED_HOME``, or ``~/.jip/federation``."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def write_key_file(path: Path, kind: str, public: bytes, private: bytes) -> None:
    """A key pair as a small JSON document, readable by its owner only."""
    document = {
        "format": KEY_FORMAT,
        "kind": kind,
        "key_id": key_id(public),
        "public": encode_key(public),
        "private": encode_key(private),
    }
    write_private(path, json.dumps(document, indent=2).encode("utf-8"))


def read_key_file(path: Path, kind: str) -> tuple[bytes, bytes]:
    """(public, private) of a key file :func:`write_key_file` wrote."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"{path}: no such key file") from None
    except ValueError as exc:
        raise Invalid(f"{path}: not a JIP key file (JSON expected)") from exc
    if not isinstance(document, dict) or document.get("kind") != kind:
        raise Invalid(f"{path}: not a {kind} key file")
    public = decode_bytes(str(document.get("public")), f"{path}: public", 32)
    private = decode_bytes(str(document.get("private")), f"{path}: private", 32)
    return public, private


@dataclass(frozen=True)
class ResearcherHome:
    """One researcher's federation folder (see the module docstring)."""

    root: Path

    box_key = property(lambda self: self.root / "box.key")
    publisher_key = property(lambda self: self.root / "publisher.key")
    hub_json = property(lambda self: self.root / "hub.json")
    token_file = property(lambda self: self.root / "token")
    ca = property(lambda self: self.root / "ca.pem")
    jobs_json = property(lambda self: self.root / "jobs.json")
    workflows = property(lambda self: self.root / "workflows")

    # -- making and opening --------------------------------------------------------------
    @classmethod
    def init(cls, path: Path, hub_url: str, token: str, ca_file: Path) -> ResearcherHome:
        """Make the folder: a fresh box key pair, the hub's URL, the token and the CA.
        An existing home is reused (its keys kept: results sealed to them stay
        readable); only the hub, token and CA are replaced."""
        if not hub_url.startswith("https://"):
            raise Invalid(f"hub URL: {hub_url!r} must start with https://")
        if not token.strip():
            raise Invalid("token: empty; ask the hub's admin (`jip hub researcher add`)")
        ca_file = Path(ca_file)
        if not ca_file.is_file():
            raise NotFound(f"CA file {ca_file}: not found; copy the hub's ca.pem here first")
        home = cls(Path(path).expanduser())
        home.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home.root, 0o700)
        if not home.box_key.exists():
            keys = generate_box_keys()
            write_key_file(home.box_key, "box", keys.public, keys.private)
        settings = {"hub_url": hub_url.rstrip("/"), "initialised_at": _now()}
        write_private(home.hub_json, json.dumps(settings, indent=2).encode("utf-8"))
        write_private(home.token_file, token.strip().encode("utf-8"))
        if ca_file.resolve() != home.ca.resolve():
            write_private(home.ca, ca_file.read_bytes())
        return home

    @classmethod
    def open(cls, path: Path) -> ResearcherHome:
        """An initialised home; NotFound says how to make one."""
        home = cls(Path(path).expanduser())
        if not home.hub_json.is_file() or not home.box_key.is_file():
            raise NotFound(
                f"{home.root}: no researcher home here; run "
                "`jip fed researcher init --home DIR --hub URL --token T --ca FILE`"
            )
        return home

    # -- what it holds -------------------------------------------------------------------
    @property
    def hub_url(self) -> str:
        return str(json.loads(self.hub_json.read_text())["hub_url"])

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def box_keys(self) -> BoxKeyPair:
        public, private = read_key_file(self.box_key, "box")
        return BoxKeyPair(public, private)

    @property
    def public_key(self) -> str:
        """The box public key as base64: what every job carries and sites seal to."""
        return encode_key(self.box_keys().public)

    def publisher(self) -> SigningKeyPair | None:
        """The publisher signing key kept here, if any."""
        if not self.publisher_key.exists():
            return None
        public, private = read_key_file(self.publisher_key, "publisher")
        return SigningKeyPair(public, private)

    def save_workflow(self, ref: WorkflowRef) -> Path:
        self.workflows.mkdir(mode=0o700, exist_ok=True)
        path = self.workflows / f"{ref.name}.json"
        write_private(path, json.dumps(ref.model_dump(mode="json"), indent=2).encode("utf-8"))
        return path

    def workflow(self, name: str) -> WorkflowRef:
        """A signed workflow reference kept here (`jip fed workflow sign`)."""
        path = self.workflows / f"{name}.json"
        if not path.is_file():
            raise NotFound(
                f"workflow {name}: no signed reference in {self.workflows}; run `jip fed "
                "workflow sign NAME --digest sha256:... --key FILE` or pass --workflow-ref"
            )
        return WorkflowRef.model_validate_json(path.read_text())

    def describe(self) -> dict[str, Any]:
        """What `jip fed researcher show` prints (public parts only)."""
        publisher = self.publisher()
        box = self.box_keys()
        return {
            "home": str(self.root),
            "hub_url": self.hub_url,
            "ca": str(self.ca),
            "public_key": encode_key(box.public),
            "key_id": key_id(box.public),
            "publisher_key": encode_key(publisher.public) if publisher else None,
            "workflows": sorted(p.stem for p in self.workflows.glob("*.json")),
            "jobs": len(self._jobs()),
        }

    # -- the job record ------------------------------------------------------------------
    def _jobs(self) -> dict[str, dict[str, Any]]:
        if not self.jobs_json.exists():
            return {}
        jobs: dict[str, dict[str, Any]] = json.loads(self.jobs_json.read_text())
        return jobs

    def _write_jobs(self, jobs: dict[str, dict[str, Any]]) -> None:
        write_private(self.jobs_json, json.dumps(jobs, indent=1, sort_keys=True).encode("utf-8"))

    def record_job(
        self, spec: JobSpec, *, title: str, levene: list[dict[str, Any]], fanout: int
    ) -> dict[str, Any]:
        """Keep a job before it is submitted (so a crash after the submit loses nothing)."""
        jobs = self._jobs()
        if spec.id in jobs:
            raise Conflict(f"job {spec.id}: already recorded here")
        jobs[spec.id] = {
            "id": spec.id,
            "title": title,
            "workflow": spec.workflow.name,
            "submitted_at": _now(),
            "outputs": [o.name for o in spec.outputs],
            "spec": spec.model_dump(mode="json"),
            "levene": levene,
            "fanout": fanout,
            "rounds": [],
        }
        self._write_jobs(jobs)
        return jobs[spec.id]

    def job(self, job_id: str) -> dict[str, Any]:
        """The local record of one job; NotFound when it was not sent from this home."""
        found = self._jobs().get(job_id)
        if found is None:
            raise NotFound(f"job {job_id}: not submitted from {self.root} (`jip fed job list`)")
        return found

    def spec(self, job_id: str) -> JobSpec:
        return JobSpec.model_validate(self.job(job_id)["spec"])

    def rounds(self, job_id: str) -> list[RoundPlan]:
        """The later rounds of a job in clear, as asked (the hub holds them sealed)."""
        return [RoundPlan.model_validate(r) for r in self.job(job_id)["rounds"]]

    def update_job(self, job_id: str, **changes: Any) -> dict[str, Any]:
        """Replace top-level keys of a job's record (the orchestration's progress)."""
        jobs = self._jobs()
        if job_id not in jobs:
            raise NotFound(f"job {job_id}: not submitted from {self.root}")
        jobs[job_id].update(changes)
        self._write_jobs(jobs)
        return jobs[job_id]

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job sent from here, oldest first: id, title, workflow, submitted_at,
        outputs (names)."""
        keys = ("id", "title", "workflow", "submitted_at", "outputs")
        jobs = sorted(self._jobs().values(), key=lambda j: (j["submitted_at"], j["id"]))
        return [{k: job[k] for k in keys} for job in jobs]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
