"""Typed, read-only views of the service's messages (proto/trm/v1/trm.proto).

Every view keeps the message it came from as ``raw`` (excluded from ``repr`` and equality) for
fields this module does not surface. Times are timezone-aware UTC datetimes, or None when unset.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Union

from ._proto import trm_pb2 as pb


def _time(unix_ms: int) -> Optional[datetime]:
    return datetime.fromtimestamp(unix_ms / 1000.0, tz=timezone.utc) if unix_ms else None


class JobState(str, enum.Enum):
    """A job's state, named as ``trmctl`` names it (``str(JobState.SUCCEEDED) == "SUCCEEDED"``)."""

    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        """True for SUCCEEDED, FAILED and CANCELLED: nothing happens to the job after these."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def from_proto(cls, value: int) -> "JobState":
        try:
            name = pb.JobState.Name(value)
        except ValueError:  # a state a newer server added
            return cls.UNSPECIFIED
        return cls(name[len("JOB_"):] if name.startswith("JOB_") else "UNSPECIFIED")

    def to_proto(self) -> int:
        return pb.JobState.Value("JOB_STATE_UNSPECIFIED" if self is JobState.UNSPECIFIED else "JOB_" + self.value)


@dataclass(frozen=True)
class EvalResult:
    """An evaluation run's result on a checkpoint: trm-eval's metrics for one dataset and split."""

    dataset: str
    dataset_hash: str
    split: str
    metrics: Dict[str, float]
    eval_job_id: str
    finished: Optional[datetime]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: "pb.EvalResult") -> "EvalResult":
        return cls(m.dataset, m.dataset_hash, m.split, dict(m.metrics), m.eval_job_id, _time(m.finished_unix_ms), m)


@dataclass(frozen=True)
class Checkpoint:
    """A stored checkpoint of a job (``step_N``) with its step's metrics and evaluation results."""

    name: str
    step: int
    size_bytes: int
    content_sha256: str
    metrics: Dict[str, float]
    created: Optional[datetime]
    evals: List[EvalResult]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: "pb.CheckpointInfo") -> "Checkpoint":
        return cls(m.name, m.step, m.size_bytes, m.content_sha256, dict(m.metrics), _time(m.created_unix_ms),
                   [EvalResult.from_proto(e) for e in m.evals], m)


@dataclass(frozen=True)
class Job:
    """A job as the coordinator holds it. ``config`` is the resolved training config (trm-train's keys)."""

    id: str
    name: str
    kind: str                  # train | eval
    state: JobState
    message: str               # why it failed or was cancelled; the latest notable event
    attempt: int
    restarts: int
    step: int
    total_steps: int
    loss: float
    tokens_per_s: float
    latest_checkpoint: str
    config_name: str
    dataset: str
    dataset_hash: str
    world_size: int
    priority: int
    max_restarts: int
    failure_kind: str
    warning: str
    placement: Dict[int, str]  # rank -> worker id
    config: Dict[str, Any]
    created: Optional[datetime]
    started: Optional[datetime]
    finished: Optional[datetime]
    owner: str = "local"       # who submitted it (the token's name)
    min_world_size: int = 0    # elastic down to it (0: not elastic)
    current_world_size: int = 0  # ranks of the current (or last) attempt; 0 before the first
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.state.final

    @classmethod
    def from_proto(cls, m: "pb.Job") -> "Job":
        try:
            config = json.loads(m.resolved_config_json) if m.resolved_config_json else {}
        except ValueError:
            config = {}
        s = m.spec
        return cls(
            id=m.id, name=s.name, kind=m.kind or "train", state=JobState.from_proto(m.state), message=m.message,
            attempt=m.attempt, restarts=m.restarts, step=m.step, total_steps=m.total_steps, loss=m.loss,
            tokens_per_s=m.tokens_per_s, latest_checkpoint=m.latest_checkpoint, config_name=s.config_name,
            dataset=m.dataset_ref or s.dataset or s.data_path, dataset_hash=m.dataset_hash, world_size=s.world_size,
            priority=s.priority, max_restarts=s.max_restarts, failure_kind=m.failure_kind, warning=m.warning,
            placement={p.rank: p.worker_id for p in m.placement}, config=config,
            created=_time(m.created_unix_ms), started=_time(m.started_unix_ms), finished=_time(m.finished_unix_ms),
            owner=m.owner or "local", min_world_size=s.min_world_size, current_world_size=m.world_size, raw=m)


@dataclass(frozen=True)
class Worker:
    id: str
    host: str
    slots: int
    free_slots: int
    device_kind: str           # cpu | cuda
    devices: List[str]
    alive: bool
    last_heartbeat: Optional[datetime]
    jobs: List[str]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: "pb.WorkerInfo") -> "Worker":
        return cls(m.id, m.host, m.slots, m.free_slots, m.device_kind, list(m.devices), m.alive,
                   _time(m.last_heartbeat_unix_ms), list(m.jobs), m)


@dataclass(frozen=True)
class Dataset:
    """A version of a pushed dataset. Names are per owner: its owner names it ``name`` (the newest
    push), others ``owner/name``; ``content_sha256`` names the content for anyone."""

    name: str
    content_sha256: str
    size_bytes: int
    files: int
    created: Optional[datetime]
    owner: str = "local"
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        """``owner/name``: how anyone names this dataset."""
        return f"{self.owner}/{self.name}"

    @classmethod
    def from_proto(cls, m: "pb.DatasetInfo") -> "Dataset":
        return cls(m.name, m.content_sha256, m.size_bytes, m.files, _time(m.created_unix_ms), m.owner or "local", m)


@dataclass(frozen=True)
class PulledCheckpoint:
    """What :meth:`Client.pull` left on disk: a verified checkpoint directory."""

    path: str
    name: str                  # step_N
    bytes: int
    weights_only: bool
    resumed_from: int          # bytes a previous, interrupted pull had already verified in place
    reconnects: int            # broken streams this pull resumed from
    seconds: float


# ---------------------------------------------------------------- events

@dataclass(frozen=True)
class Event:
    """One of a job's events. ``seq`` runs 1, 2, 3, ... without gaps (log events included)."""

    seq: int
    time: Optional[datetime]


@dataclass(frozen=True)
class StateEvent(Event):
    state: JobState
    attempt: int
    message: str


@dataclass(frozen=True)
class MetricsEvent(Event):
    step: int
    total_steps: int
    values: Dict[str, float]   # lm_loss, lr, tokens_per_s, ...; eval_* keys when ``eval``
    eval: bool


@dataclass(frozen=True)
class CheckpointEvent(Event):
    checkpoint: Checkpoint


@dataclass(frozen=True)
class LogEvent(Event):
    rank: int
    text: str


AnyEvent = Union[StateEvent, MetricsEvent, CheckpointEvent, LogEvent]


def event_from_proto(m: "pb.JobEvent") -> Optional[AnyEvent]:
    """The typed event, or None for a kind this client does not know (a newer server)."""
    seq, t = m.seq, _time(m.time_unix_ms)
    kind = m.WhichOneof("kind")
    if kind == "state":
        return StateEvent(seq, t, JobState.from_proto(m.state.state), m.state.attempt, m.state.message)
    if kind == "metrics":
        x = m.metrics
        return MetricsEvent(seq, t, x.step, x.total_steps, dict(x.values), x.eval)
    if kind == "checkpoint":
        return CheckpointEvent(seq, t, Checkpoint.from_proto(m.checkpoint))
    if kind == "log":
        return LogEvent(seq, t, m.log.rank, m.log.text.rstrip("\r\n"))
    return None
