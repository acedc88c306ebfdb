"""Request and response bodies of the flow API (``/api/flow``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jip.api_types import ByteCount
from jip.flow.engine import RunState, TaskState
from jip.flow.schema import ResultKind

SERIES_UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


class WorkflowModel(BaseModel):
    dag_id: str
    description: str | None = None
    # JSON Schema of the run parameters; each operator's object holds its full schema.
    params_schema: dict[str, Any]
    tags: list[str] = Field(default_factory=list)
    paused: bool = False


class StartRun(BaseModel):
    """Start a workflow on a saved cohort or on a list of series."""

    series: list[str] = Field(default_factory=list, max_length=10000)
    cohort_id: str | None = None
    # Run parameters: an object per operator (``{"organ-seg": {"median_radius": 2}}``).
    params: dict[str, Any] = Field(default_factory=dict)


class TaskModel(BaseModel):
    task_id: str
    state: TaskState
    map_index: int = -1
    series_instance_uid: str | None = None
    try_number: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None


class SeriesProgress(BaseModel):
    series_instance_uid: str
    state: TaskState
    tasks: dict[str, TaskState]


class RunModel(BaseModel):
    run_id: str
    dag_id: str
    state: RunState
    series: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    cohort_id: str | None = None
    rule_id: int | None = None
    created_by: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    note: str | None = None


class RunDetail(RunModel):
    tasks: list[TaskModel] = Field(default_factory=list)
    per_series: list[SeriesProgress] = Field(default_factory=list)
    tasks_total: int = 0
    tasks_finished: int = 0
    # The run this one retries (its failed series only); see jip.flow.retry.
    retry_of: str | None = None


class ResultIn(BaseModel):
    """A result a put-output task delivered (recorded through the API)."""

    series_instance_uid: str = Field(pattern=SERIES_UID_PATTERN, max_length=64)
    operator: str = Field(max_length=64)
    kind: ResultKind
    key: str = Field(max_length=512)
    name: str = Field(max_length=256)
    size_bytes: ByteCount
    result_series_uid: str | None = Field(default=None, pattern=SERIES_UID_PATTERN, max_length=64)
    study_instance_uid: str | None = Field(default=None, pattern=SERIES_UID_PATTERN, max_length=64)
    modality: str | None = Field(default=None, max_length=16)


class ResultsIn(BaseModel):
    results: list[ResultIn] = Field(max_length=10000)


class ResultModel(ResultIn):
    id: int
    run_id: str
    created_at: datetime | None = None
    # Files: where to download it; DICOM: its WADO-RS series URL.
    url: str


class ReviewModel(BaseModel):
    run_id: str
    series_instance_uid: str
    done: bool
    seg_series_instance_uid: str | None = None
    done_by: str | None = None
    done_at: datetime | None = None


class ReviewDone(BaseModel):
    """Mark the human step done; no series means every series of the run."""

    series: list[str] | None = None


class RuleIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    dag_id: str = Field(min_length=1, max_length=250)
    # A cohort query (meta's cohort language) a complete series must match.
    query: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class RuleModel(RuleIn):
    id: int
    created_by: str
    created_at: datetime
    firings: int = 0


class FiringModel(BaseModel):
    rule_id: int
    series_instance_uid: str
    run_id: str | None
    outcome: str
    message: str
    fired_at: datetime
