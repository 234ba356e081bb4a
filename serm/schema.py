"""The round's contracts, defined once: every artifact's columns, the label statuses and the
one rule for what may be trained on, the metrics type, the round manifest, and the layout that
names every file of a workspace and of a round.

Nothing else in SERM spells a column list, a label status or an artifact file name: it imports
them from here. Stdlib only at import time (pandas inside functions), so every module may
depend on this one.

    ingest ─► drift ─► mine ─► annotate ─► check ─► train ─► evaluate ─► promote
    events     drift    candidates votes    label     model    metrics    decision,
    quarantine report   mining     labels   checks                       version
    query_frame         report     escalations

A round runs in its staging folder (`.serm/rounds/rNNNN/<stage>/<file>`); `serm.round`
commits the keepers to `data/rounds/rNNNN/<file>` in one DVC version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

# --------------------------------------------------------------------------- columns
EVENT_COLUMNS = ("event_id", "ts", "query_id", "query", "locale", "doc_id", "position", "clicked", "dwell_s")
# Logged events may also carry these (kept when present): a session id, the engine's own score.
EVENT_OPTIONAL_COLUMNS = ("session_id", "served_score")
DOCUMENT_COLUMNS = ("doc_id", "title", "text", "locale")
JUDGMENT_COLUMNS = ("query_id", "query", "doc_id", "doc_title", "doc_text", "grade", "locale")
PAIR_KEY = ("query_id", "doc_id")
IMPRESSION_COLUMNS = ("query_id", "doc_id", "position", "clicked")   # what the click agents read of events
CANDIDATE_COLUMNS = ("query_id", "doc_id", "round", "agents", "reasons", "agent_scores", "priority")
VOTE_COLUMNS = ("query_id", "doc_id", "agent", "sample", "grade", "rationale", "latency_ms", "tokens", "cost")
LEVEL1_COLUMNS = ("query_id", "doc_id", "agent", "grade", "intra_share")
# `why`: a readable reason for the status; `agents`: each voter's level-1 grade.
LABEL_COLUMNS = ("query_id", "doc_id", "grade", "agreement", "status", "agents", "why", "round", "policy_hash")
# `purpose`: train (an escalation: the agents disagreed) or test (a test request: the grade joins
# the evolving test set and is never trained on).
ESCALATION_COLUMNS = ("query_id", "doc_id", "locale", "round", "query", "doc_title", "doc_text", "why", "agents",
                      "escalated_at", "purpose")
TRAIN, TEST = "train", "test"
REVIEW_COLUMNS = ("query_id", "doc_id", "grade", "reviewer", "source", "resolved_at", "trained_round")
EVOLVING_TEST_COLUMNS = (*JUDGMENT_COLUMNS, "round", "reviewer", "source", "resolved_at")
GRADES = (0, 1, 2, 3)


class LabelStatus(str, Enum):
    """What the annotation stage decided for a pair. A `str` enum: it compares equal to the
    value stored in parquet (`labels.status == LabelStatus.ACCEPTED`)."""

    ACCEPTED = "accepted"     # both agreement levels passed
    HUMAN = "human"           # a person graded it (an imported review or the simulated reviewer)
    ESCALATED = "escalated"   # waiting for a person; never trained on
    REJECTED = "rejected"     # the policy drops disagreements (`on_disagreement: drop`)

    def __str__(self) -> str:
        return self.value


TRAINABLE = (LabelStatus.ACCEPTED.value, LabelStatus.HUMAN.value)


def name_missing(missing, present, expected) -> str:
    """Missing contract columns for an error message, each with the present column it was
    probably meant to be: "query (found 'qeury': misspelt?), locale". Each unexpected column
    is offered once, for the missing name it is closest to."""
    from difflib import SequenceMatcher

    unknown = [str(c) for c in present if c not in expected]
    pairs = sorted(((SequenceMatcher(None, m, u).ratio(), m, u) for m in missing for u in unknown), reverse=True)
    hint: dict = {}
    for ratio, m, u in pairs:
        if ratio >= 0.6 and m not in hint and u not in hint.values():
            hint[m] = u
    return ", ".join(f"{m} (found {hint[m]!r}: misspelt?)" if m in hint else m for m in missing)


def trainable(labels):
    """The labels that may reach training: accepted by agreement, or graded by a person."""
    return labels[labels["status"].isin(TRAINABLE)].copy()


# --------------------------------------------------------------------------- metrics
STATIC, EVOLVING = "static", "evolving"
TEST_SETS = (STATIC, EVOLVING)
METRIC_NAMES = ("ndcg@4", "ndcg@10", "accuracy", "macro_f1", "ece")


@dataclass(frozen=True)
class Metrics:
    """One model's metrics, flat per test set (`{"static": {"ndcg@4": 0.71, "accuracy": …,
    "locale": "en"}, "evolving": {…}}`), with the metric that decides named.

    >>> m = Metrics({"static": {"ndcg@4": 0.7}, "evolving": {"ndcg@4": 0.6}})
    >>> m.primary("evolving")
    0.6
    """

    sets: Mapping[str, Mapping[str, Any]]
    primary_metric: str = "ndcg@4"

    @classmethod
    def from_dict(cls, d: Mapping | "Metrics" | None, primary_metric: str = "ndcg@4") -> "Metrics":
        if isinstance(d, Metrics):
            return d
        return cls({k: dict(v) for k, v in (d or {}).items() if isinstance(v, Mapping)}, primary_metric)

    def __getitem__(self, test_set: str) -> Mapping[str, Any]:
        return self.sets.get(test_set) or {}

    def get(self, test_set: str, metric: str, default=None):
        return self[test_set].get(metric, default)

    def primary(self, test_set: str):
        return self.get(test_set, self.primary_metric)

    def locale(self, test_set: str):
        return self.get(test_set, "locale")

    def to_dict(self) -> dict:
        return {k: dict(v) for k, v in self.sets.items()}


@dataclass(frozen=True)
class RoundMetrics:
    """The candidate's and production's metrics on the same test sets (a round's metrics.json),
    the reference rankers' (`serm.baselines`: BM25, the off-the-shelf bi-encoder) beside them,
    and `paired`: per test set, candidate − production on the primary metric, paired over the
    set's queries (`serm.stats.Comparison.to_dict()`: delta, 95% CI, p, verdict)."""

    candidate: Metrics
    production: Metrics
    baselines: Mapping[str, Metrics] = field(default_factory=dict)
    paired: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping, primary_metric: str = "ndcg@4") -> "RoundMetrics":
        return cls(Metrics.from_dict(d.get("candidate"), primary_metric),
                   Metrics.from_dict(d.get("production"), primary_metric),
                   {k: Metrics.from_dict(v, primary_metric) for k, v in (d.get("baselines") or {}).items()},
                   {k: dict(v) for k, v in (d.get("paired") or {}).items()})

    def to_dict(self) -> dict:
        out = {"candidate": self.candidate.to_dict(), "production": self.production.to_dict()}
        if self.baselines:
            out["baselines"] = {k: v.to_dict() for k, v in self.baselines.items()}
        if self.paired:
            out["paired"] = {k: dict(v) for k, v in self.paired.items()}
        return out


# --------------------------------------------------------------------------- stages and files
STAGES = ("ingest", "drift", "mine", "annotate", "check", "train", "evaluate", "promote")


@dataclass(frozen=True)
class Artifact:
    """A file a stage writes: `stage/name` in staging, `name` in the committed round folder."""

    stage: str
    name: str
    committed: bool = True    # kept in data/rounds/rNNNN/ when the round commits


EVENTS = Artifact("ingest", "events.parquet")
QUARANTINE = Artifact("ingest", "quarantine.parquet")
QUERY_FRAME = Artifact("ingest", "query_frame.parquet")
DRIFT_HTML = Artifact("drift", "drift.html")
DRIFT_JSON = Artifact("drift", "drift.json")
CANDIDATES = Artifact("mine", "candidates.parquet")
MINING_REPORT = Artifact("mine", "mining_report.json")
VOTES = Artifact("annotate", "votes.parquet")
LABELS = Artifact("annotate", "labels.parquet")
ESCALATIONS = Artifact("annotate", "escalations.parquet")
ANNOTATION_REPORT = Artifact("annotate", "annotation_report.json")
COST_LEDGER = Artifact("annotate", "cost_ledger.json")
LABEL_CHECKS = Artifact("check", "label_checks.json")
METRICS = Artifact("evaluate", "metrics.json")
# Handed between the cluster pipeline's steps only (never committed).
STREAM_PAIRS = Artifact("ingest", "pairs.parquet", committed=False)
SHARD_SCORES = Artifact("mine", "scores.parquet", committed=False)
SHARD_INFO = Artifact("mine", "shard.json", committed=False)
ARTIFACTS = (EVENTS, QUARANTINE, QUERY_FRAME, DRIFT_HTML, DRIFT_JSON, CANDIDATES, MINING_REPORT, VOTES, LABELS,
             ESCALATIONS, ANNOTATION_REPORT, COST_LEDGER, LABEL_CHECKS, METRICS)
# Written at commit time into the committed round folder only.
MANIFEST_FILE = "manifest.json"
REPORT_HTML = "report.html"
VERSIONS_PLOT = "metrics_by_version.png"
KFP_LOG = "kfp.log"
# In data/: the escalation queue and the reviewers' grades (append-only).
ESCALATION_QUEUE_FILE = Path("escalations") / "queue.parquet"
REVIEWS_FILE = Path("escalations") / "resolved.parquet"
# The evolving test set of a `files` source: reviewed test requests, per locale, never trained on.
EVOLVING_TESTS_FILE = Path("test") / "evolving.parquet"
# A model directory's own files (serm.model.cross_encoder writes them; config.json is HF's).
MODEL_CONFIG = "config.json"
MODEL_SPEC = "serm_model.json"
MODEL_METRICS = "metrics.json"
MODEL_LINEAGE = "lineage.json"
# Beside data/ in git: DVC's pointer to data/ and the version registry.
DATA_DVC = "data.dvc"
VERSIONS_FILE = "versions.json"
VERSION_FILES = (DATA_DVC, VERSIONS_FILE)


def round_name(round_no: int) -> str:
    return f"r{round_no:04d}"


def round_number(name: str) -> int | None:
    """`r0007` -> 7; anything else -> None."""
    return int(name[1:]) if len(name) > 1 and name[0] == "r" and name[1:].isdigit() else None


@dataclass(frozen=True)
class RoundLayout:
    """Where every file of one round lives: `staging` while it runs, `committed` after."""

    round_no: int
    staging: Path
    committed: Path

    def stage_dir(self, stage: str) -> Path:
        return self.staging / stage

    def staged(self, art: Artifact) -> Path:
        return self.staging / art.stage / art.name

    def kept(self, art: Artifact | str) -> Path:
        return self.committed / (art.name if isinstance(art, Artifact) else art)

    @property
    def manifest(self) -> Path:
        return self.staging / MANIFEST_FILE

    @property
    def committed_manifest(self) -> Path:
        return self.committed / MANIFEST_FILE

    @property
    def report(self) -> Path:
        return self.committed / REPORT_HTML

    @property
    def kfp_log(self) -> Path:
        return self.staging / KFP_LOG

    @property
    def kfp_root(self) -> Path:
        return self.staging / "kfp"


@dataclass(frozen=True)
class WorkspaceLayout:
    """The files of a workspace's versioned `data/` and its derived state `.serm/`."""

    root: Path

    @property
    def data(self) -> Path: return self.root / "data"
    @property
    def dot(self) -> Path: return self.root / ".serm"
    @property
    def state(self) -> Path: return self.data / "state.json"
    @property
    def model(self) -> Path: return self.data / "model"
    @property
    def seed_train(self) -> Path: return self.data / "seed" / "train.parquet"
    @property
    def seed_query_frame(self) -> Path: return self.data / "seed" / "query_frame.parquet"
    @property
    def tests(self) -> Path: return self.data / "test" / "test.parquet"
    @property
    def evolving_tests(self) -> Path: return self.data / EVOLVING_TESTS_FILE
    @property
    def documents(self) -> Path: return self.data / "documents.parquet"
    @property
    def batches_dir(self) -> Path: return self.data / "batches"
    @property
    def ingest_index(self) -> Path: return self.batches_dir / "index.json"
    @property
    def labels_dir(self) -> Path: return self.data / "labels"
    @property
    def rounds_dir(self) -> Path: return self.data / "rounds"
    @property
    def staging_dir(self) -> Path: return self.dot / "rounds"
    @property
    def escalation_queue(self) -> Path: return self.data / ESCALATION_QUEUE_FILE
    @property
    def reviews(self) -> Path: return self.data / REVIEWS_FILE
    @property
    def versions(self) -> Path: return self.root / VERSIONS_FILE
    @property
    def vote_cache(self) -> Path: return self.dot / "cache" / "votes.sqlite"
    @property
    def score_cache(self) -> Path: return self.dot / "cache" / "scores"

    def batch(self, batch_no: int) -> Path:
        """An ingested batch's folder: events, quarantine, batch.json."""
        return self.batches_dir / f"b{batch_no:04d}"

    def round_labels(self, round_no: int) -> Path:
        return self.labels_dir / f"{round_name(round_no)}.parquet"

    def label_files(self) -> list[Path]:
        return sorted(self.labels_dir.glob("r*.parquet"))

    def round(self, round_no: int) -> RoundLayout:
        return RoundLayout(round_no, self.staging_dir / round_name(round_no), self.rounds_dir / round_name(round_no))

    def round_folders(self) -> list[RoundLayout]:
        """Every round folder under data/rounds/, oldest first."""
        if not self.rounds_dir.exists():
            return []
        nums = sorted(n for n in (round_number(p.name) for p in self.rounds_dir.iterdir() if p.is_dir())
                      if n is not None)
        return [self.round(n) for n in nums]

    def committed_rounds(self) -> list[RoundLayout]:
        """Every committed round (its folder holds the manifest), oldest first."""
        return [r for r in self.round_folders() if r.committed_manifest.exists()]

    def staged_rounds(self) -> list[int]:
        if not self.staging_dir.exists():
            return []
        return sorted(n for n in (round_number(p.name) for p in self.staging_dir.iterdir()) if n is not None)


# --------------------------------------------------------------------------- the round manifest
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class StageEntry:
    """One stage's record in the manifest."""

    status: str = "pending"           # running | done | failed
    at: str | None = None
    seconds: float | None = None
    result: Any = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    _FIELDS = ("status", "at", "seconds", "result", "error")

    @classmethod
    def from_dict(cls, d: Mapping) -> "StageEntry":
        return cls(**{k: d.get(k) for k in cls._FIELDS if k in d},
                   extra={k: v for k, v in d.items() if k not in cls._FIELDS})

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self._FIELDS if getattr(self, k) is not None}
        return {**self.extra, **out}

    @property
    def done(self) -> bool:
        return self.status == "done"


@dataclass
class RoundManifest:
    """Per-stage status, timings and results of one round, its trigger decision and its
    outcome: what a resumed round reuses and what the committed round records. The only
    reader and writer of `manifest.json`."""

    round: int
    path: Path | None = None
    stages: dict[str, StageEntry] = field(default_factory=dict)
    started: str | None = None
    batch: int | None = None
    policy: str | None = None
    policy_hash: str | None = None
    base: str | None = None
    decision: dict | None = None
    promoted: bool | None = None
    reason: str | None = None
    tag: str | None = None
    finished: str | None = None
    extra: dict = field(default_factory=dict)

    _FIELDS = ("round", "started", "batch", "policy", "policy_hash", "base", "decision", "promoted", "reason",
               "tag", "finished")

    # io
    @classmethod
    def from_dict(cls, d: Mapping, path: Path | None = None) -> "RoundManifest":
        stages = {k: StageEntry.from_dict(v) for k, v in (d.get("stages") or {}).items()}
        known = {k: d.get(k) for k in cls._FIELDS if k in d}
        return cls(path=path, stages=stages, **known,
                   extra={k: v for k, v in d.items() if k not in cls._FIELDS and k != "stages"})

    @classmethod
    def load(cls, path: Path) -> "RoundManifest":
        """The manifest at `path` (a file, or a round folder holding one)."""
        path = Path(path)
        if path.is_dir() or path.name != MANIFEST_FILE:
            path = path / MANIFEST_FILE
        return cls.from_dict(json.loads(path.read_text()), path)

    @classmethod
    def open(cls, path: Path, round_no: int) -> "RoundManifest":
        """The manifest at `path`, or a new one for `round_no` (not written until `save`)."""
        path = Path(path)
        return cls.load(path) if path.exists() else cls(round=round_no, path=path, started=now_iso())

    @classmethod
    def maybe(cls, path: Path) -> "RoundManifest | None":
        """The manifest at `path` (file or folder) if there is one."""
        path = Path(path)
        f = path if path.name == MANIFEST_FILE else path / MANIFEST_FILE
        return cls.load(f) if f.exists() else None

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update({k: getattr(self, k) for k in self._FIELDS if getattr(self, k) is not None})
        out["stages"] = {k: v.to_dict() for k, v in self.stages.items()}
        return out

    def save(self, path: Path | None = None) -> "RoundManifest":
        from serm.files import atomic_write_json

        target = Path(path or self.path)
        atomic_write_json(target, self.to_dict())
        if path is None or self.path is None:
            self.path = target
        return self

    def update(self, **info) -> "RoundManifest":
        """Set round fields (`batch`, `decision`, `promoted`, …; other names are kept as extra
        keys) and save."""
        for k, v in info.items():
            if k in self._FIELDS:
                setattr(self, k, v)
            else:
                self.extra[k] = v
        return self.save()

    # stages
    def entry(self, stage: str) -> StageEntry:
        return self.stages.get(stage) or StageEntry()

    def done(self, stage: str) -> bool:
        return self.entry(stage).done

    def result(self, stage: str) -> dict:
        return self.entry(stage).result or {}

    def done_stages(self) -> list[str]:
        return [k for k, v in self.stages.items() if v.done]

    def mark(self, stage: str, status: str, **info) -> None:
        e = self.stages.setdefault(stage, StageEntry())
        e.status, e.at = status, now_iso()
        for k, v in info.items():
            if k in StageEntry._FIELDS:
                setattr(e, k, v)
            else:
                e.extra[k] = v
        self.save()

    def seconds(self) -> dict[str, float]:
        return {k: self.stages[k].seconds for k in STAGES if k in self.stages and self.stages[k].seconds is not None}

    # what the stages recorded
    @property
    def ingest(self) -> dict:
        return self.result("ingest")

    @property
    def drift(self) -> dict:
        return self.result("drift")

    @property
    def locale(self) -> str | None:
        return self.ingest.get("locale")

    @property
    def evolved(self) -> bool:
        return "mine" in self.stages
