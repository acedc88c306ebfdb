"""The site agent's tables in the site's catalog database (prefix ``fed_``).

- ``fed_jobs``: every job round the hub delivered, written before the agent acknowledges
  it, with the site's decision, the sealed result (stored before it is posted, so a
  restart posts the same bytes again and never recomputes them) and what the hub has
  been told (so a restart reports what the hub missed).
- ``fed_policy``: the site's policy, one JSON document (see :mod:`.policy`).
- ``fed_trusted_keys``: the workflow signing keys the site trusts, by name.
- ``fed_released_cohorts``: the differencing guard's ledger: each released cohort as
  HMAC-SHA256 hashes of its series under a site secret (never the UIDs).
- ``fed_carried_jobs``: the jobs that came in a signed bundle carried by hand (`jip fed
  import-job`), not from the hub: the hub agent leaves them alone, and their result
  leaves only as a bundle (see :mod:`.bundles`).
- ``fed_vocabulary``: this site's local values (or glob patterns) of a META field and
  the network term each means (see :mod:`.vocabulary`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from jip.db import Base


class FedJob(Base):
    __tablename__ = "fed_jobs"
    __table_args__ = (UniqueConstraint("job_id", "round", name="uq_fed_jobs_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    round: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, object]] = mapped_column(JSON)  # JobSpec (round 1) or RoundRequest
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    result_posted: Mapped[bool] = mapped_column(Boolean, default=False)
    reported_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FedPolicy(Base):
    __tablename__ = "fed_policy"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FedTrustedKey(Base):
    __tablename__ = "fed_trusted_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str] = mapped_column(String(44))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FedReleasedCohort(Base):
    __tablename__ = "fed_released_cohorts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    series: Mapped[list[str]] = mapped_column(JSON)  # HMAC-SHA256 hex digests
    released_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FedCarriedJob(Base):
    __tablename__ = "fed_carried_jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    signer: Mapped[str] = mapped_column(String(16))  # key id of the researcher's publisher
    bundle_size: Mapped[int] = mapped_column(Integer)
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    imported_by: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FedVocabulary(Base):
    __tablename__ = "fed_vocabulary"
    __table_args__ = (UniqueConstraint("field", "local", name="uq_fed_vocabulary_local"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    field: Mapped[str] = mapped_column(String(64), index=True)
    local: Mapped[str] = mapped_column(String(256))  # a value, or a glob pattern (* and ?)
    network: Mapped[str] = mapped_column(String(128))
    pattern: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
