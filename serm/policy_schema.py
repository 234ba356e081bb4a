"""The evolution policy's schema: pydantic models for every section of the YAML, the drift
detectors' vocabulary (their types, columns and default thresholds) and policy durations.

Every model forbids unknown fields, is frozen and refuses .inf/.nan. Agents are chosen by name
through the registries in `serm.mining` and `serm.annotation` (built-ins and installed plugins,
`serm.plugins`); drift detector types through `DETECTORS`; an agent's parameters are
validated by its own `Params` model and an unknown name or parameter lists the valid ones.
`serm.policy` loads a YAML file into `Policy`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError,
                      WithJsonSchema, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from serm.plugins import DRIFT_DETECTORS, DriftDetector, PluginError, Registry
from serm.policy_errors import HINTS, error_rows, field_path, join_path, raise_rows, show


class _Strict(BaseModel):
    # .inf/.nan pass `ge=0` checks and then break the stage that multiplies by them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- data
class CandidateSpec(_Strict):
    hard_negatives: int = Field(3, ge=0, le=50)
    random_negatives: int = Field(4, ge=0, le=200)


class ClickSpec(_Strict):
    sessions_per_query: int = Field(2, ge=1, le=100)
    examination_decay: float = Field(1.0, ge=0.0, le=5.0)
    attractiveness: tuple[float, float, float, float] = (0.03, 0.15, 0.45, 0.85)

    @field_validator("attractiveness")
    @classmethod
    def _probabilities(cls, v):
        if any(not 0.0 <= p <= 1.0 for p in v):
            raise ValueError("each attractiveness must be a probability in [0, 1]")
        return v


class SimulatedData(_Strict):
    """A simulated stream over judged data: the shipped XQuAD (`judgments` unset) or any
    judgments file. Queries fall into groups (`shift`: by locale, by another column's value,
    or by file order); the seed group trains v0, each stream group arrives in batches, clicks
    come from a click model on the hidden grades, held-out queries of each group are its test."""

    source: Literal["simulated"] = "simulated"
    judgments: str | None = Field(None, description="a judgments file (parquet, CSV, JSONL; relative to the "
                                  "policy file); unset = the shipped XQuAD")
    shift: Literal["locale", "column", "order"] = Field(
        "locale", description="how the stream drifts: by locale, by the values of shift_column, or in file order")
    shift_column: str | None = Field(None, description="shift: column — the judgments column whose values are the groups")
    seed_locale: str = Field("en", description="the seed group: a locale (or a shift_column value)")
    stream_locales: list[str] = Field(default_factory=lambda: ["es", "de", "tr"], min_length=1,
                                      description="the groups the stream brings, one per batch in turn")
    queries_per_batch: int = Field(200, ge=1)
    seed_queries: int = Field(200, ge=10)
    test_queries: int = Field(80, ge=5)
    candidates: CandidateSpec = Field(default_factory=CandidateSpec)
    clicks: ClickSpec = Field(default_factory=ClickSpec)

    @property
    def xquad(self) -> bool:
        return self.judgments is None

    @model_validator(mode="after")
    def _groups(self):
        if self.shift == "column" and not self.shift_column:
            raise ValueError("shift: column needs shift_column, the judgments column whose values are the groups")
        if self.shift != "column" and self.shift_column:
            raise ValueError(f"shift_column is read only with shift: column (shift is {self.shift!r})")
        if self.xquad:
            from serm.data.xquad import LOCALES

            if self.shift != "locale":
                raise ValueError("the shipped XQuAD shifts by locale; set `judgments` to simulate another shift")
            for loc in [self.seed_locale, *self.stream_locales]:
                if loc not in LOCALES:
                    raise ValueError(f"unknown locale {loc!r}; XQuAD has {', '.join(LOCALES)}")
        if self.shift != "order" and self.seed_locale in self.stream_locales:
            raise ValueError(f"seed_locale {self.seed_locale!r} must not also be a stream locale")
        return self


class FilesData(_Strict):
    """A team's own data: a document catalogue, judged seed pairs, a static test set, and log
    events ingested from files (`serm ingest`, or `serm watch` on the inbox)."""

    source: Literal["files"]
    documents: str = Field(description="documents file: doc_id, title, text, locale (+ any columns, kept)")
    seed_judgments: str = Field(description="judgments that train the first model (v0)")
    static_test: str = Field(description="judgments of the static test set (never trained on)")
    inbox: str | None = Field(None, description="folder `serm watch` takes event files from; default WORKSPACE/inbox")
    batching: Literal["file", "window"] = Field(
        "file", description="file: each ingested file is one batch; window: events cut into batches by `ts`")
    window: Duration = Field(86400.0, gt=0.0, description="batching: window — the width of a batch (e.g. 1d, 6h)")

    @property
    def xquad(self) -> bool:
        return False


def _data_source(value):
    # `source: xquad` (before sources existed) is the simulated stream over the shipped XQuAD.
    if isinstance(value, dict) and value.get("source", "simulated") in ("xquad", None):
        return {**value, "source": "simulated"}
    return value


DataSpec = Annotated[SimulatedData | FilesData, Field(discriminator="source"), BeforeValidator(_data_source)]
DATA_SOURCES = ("simulated", "files")
PATH_FIELDS = {"simulated": ("judgments",), "files": ("documents", "seed_judgments", "static_test", "inbox")}


# --------------------------------------------------------------------------- drift
# The built-in drift detectors: their per-query columns (`monitoring.drift_report` builds one
# Evidently metric per column) and the thresholds that differ from DetectorSpec's 0.1. Installed
# packages add types through the entry point group `serm.drift_detectors` (`serm.plugins`).
DETECTOR_TYPES: tuple[str, ...] = ("query_descriptors", "locale_mix", "score", "engagement", "embedding")
DETECTOR_COLUMNS = {
    "query_descriptors": ["query_chars", "query_tokens", "unseen_token_share", "non_ascii_share"],
    "locale_mix": ["locale"],
    "score": ["score"],
    "engagement": ["ctr", "mean_click_position"],
    "embedding": ["query"],
}
DEFAULT_THRESHOLDS = {"embedding": 0.05}   # a p-value: the embedding detector's test alpha
# Every detector type: the built-ins (-> their columns) and plugins (-> their DriftDetector class).
DETECTORS = Registry("drift detector", DRIFT_DETECTORS, DETECTOR_COLUMNS, base=DriftDetector)


def detector_columns(type_: str) -> list[str]:
    """The per-query columns a detector type compares (a plugin's `columns`)."""
    return DETECTOR_COLUMNS[type_] if type_ in DETECTOR_COLUMNS else list(DETECTORS[type_].columns)


def _detector_type(value: str) -> str:
    try:
        if value not in DETECTORS:
            raise_rows([("", f"unknown drift detector type {show(value)}; valid: {', '.join(DETECTORS)}",
                         "use one of the valid types (plugins: installed packages' "
                         "serm.drift_detectors entry points)")])
        DETECTORS[value]   # a plugin the policy names must load
    except PluginError as exc:
        raise_rows([("", exc.problem, exc.hint)])
    return value


# A built-in type or an installed plugin's (validated against `DETECTORS`, which lists them).
DetectorType = Annotated[str, AfterValidator(_detector_type)]


class DetectorSpec(_Strict):
    type: DetectorType = Field(description="a built-in type (" + ", ".join(DETECTOR_TYPES) + ") or an installed "
                               "plugin's (entry point group serm.drift_detectors)")
    columns: list[str] | None = None
    # Per-type default (DEFAULT_THRESHOLDS, a plugin's `threshold`): 0.1, but a p-value of 0.05 for `embedding`.
    threshold: float = Field(0.1, gt=0.0, le=1.0)
    share_threshold: float = Field(0.5, gt=0.0, le=1.0)
    embedder: Literal["auto", "use-m3", "minilm"] = Field(
        "auto", description="embedding only: use-m3 (multilingual), minilm (English), auto = use-m3 if installed")

    @model_validator(mode="before")
    @classmethod
    def _type_defaults(cls, data):
        # `type` may be anything a user wrote (a list, a mapping): only a name can have a default.
        if isinstance(data, dict) and "threshold" not in data and isinstance(data.get("type"), str):
            default = DEFAULT_THRESHOLDS.get(data["type"])
            try:
                if default is None and DETECTORS.is_plugin(data["type"]):
                    default = DETECTORS[data["type"]].threshold
            except PluginError:
                pass   # `type`'s own validation reports it
            if default is not None:
                data = {**data, "threshold": default}
        return data

    @model_validator(mode="after")
    def _columns(self):
        valid = detector_columns(self.type)
        for col in self.columns or []:
            if col not in valid:
                raise ValueError(f"unknown column {col!r} for {self.type}; valid: {', '.join(valid)}")
        return self


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(value):
    """Seconds from a number or '90s', '30m', '6h', '1d', '1w'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise PydanticCustomError("duration", "not a duration: use 90s, 30m, 6h, 1d or 1w, or a number of seconds")
    return float(m.group(1)) * _SECONDS[m.group(2) or "s"]


def parse_duration(value) -> float:
    """Seconds of a duration given on a command line ('60s', '5m'); `DataError` if it is none."""
    from serm.errors import DataError

    try:
        return float(_parse_duration(value))
    except PydanticCustomError:
        raise DataError(f"{value!r} is not a duration: use 90s, 30m, 6h, 1d or 1w, or a number of seconds") from None


def duration(seconds: float) -> str:
    """A policy duration as people write it: 90 -> '1m30s', 86400 -> '1d', 0 -> '0s'."""
    seconds = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0.0),
                     WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                                               {"type": "string", "pattern": _DURATION.pattern.join("^$")}]})]


class TriggerSpec(_Strict):
    mode: Literal["any", "all"] = "any"
    min_new_pairs: int = Field(500, ge=0)
    cooldown: Duration = Field(0.0, description="evolve at most once per this long (e.g. 6h); 0 = no cooldown")
    max_rounds_per_period: int | None = Field(None, ge=1, description="at most this many evolution rounds per period")
    period: Duration = Field(86400.0, gt=0.0, description="the window of max_rounds_per_period (e.g. 1d)")
    force: bool = False


class DriftSpec(_Strict):
    detectors: list[DetectorSpec] = Field(
        default_factory=lambda: [DetectorSpec(type="query_descriptors")], min_length=1
    )
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)


# --------------------------------------------------------------------------- agents
class AgentSpec(BaseModel):
    """`{name: ..., **params}`; params are validated by the named agent's own model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _non_finite(value, loc: tuple = ()):
    """Paths of the .inf/.nan floats inside a validated params dump."""
    if isinstance(value, float) and not math.isfinite(value):
        yield loc, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, (*loc, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*loc, i))


def installed_plugins() -> list[str]:
    """'mining agent NAME: entry point ... of package ...' for every installed plugin, each one
    loaded: `PluginError` if one fails to (the Dockerfile's check of baked-in plugins)."""
    from serm.annotation import REGISTRY as ANNOTATION
    from serm.mining import REGISTRY as MINING

    return [f"{reg.kind} {name}: {reg.origin(name)}" for reg in (MINING, ANNOTATION, DETECTORS)
            for name in reg.plugin_names() if reg[name]]


def _validate_agents(agents: list[AgentSpec], registry, kind: str) -> list[AgentSpec]:
    """`registry`: a `serm.plugins.Registry` (built-ins and installed plugins)."""
    try:
        names = list(registry)
    except PluginError as exc:   # two sources claim one name
        raise_rows([("", exc.problem, exc.hint)])
    rows = []
    seen = set()
    for i, spec in enumerate(agents):
        if spec.name not in names:
            rows.append((f"[{i}].name", f"unknown {kind} agent {show(spec.name)}; valid: {', '.join(sorted(names))}",
                         f"use one of the valid names (plugins: installed packages' serm.{kind}_agents entry points)"))
            continue
        try:
            agent_cls = registry[spec.name]
        except PluginError as exc:
            rows.append((f"[{i}].name", exc.problem, exc.hint))
            continue
        model = spec.params().get("model") if spec.name == "llm_judge" else None
        key = (spec.name, model if isinstance(model, str) else repr(model))
        if key in seen:
            rows.append((f"[{i}].name", f"{kind} agent {spec.name!r} is listed twice", "remove one of the entries"))
        seen.add(key)
        params_model = agent_cls.Params
        try:
            params = params_model.model_validate(spec.params())
        except ValidationError as exc:
            unknown = {field_path(tuple(e["loc"])) for e in exc.errors() if e["type"] == "extra_forbidden"}
            for field, msg, hint in error_rows(exc):
                if field in unknown:   # the value is not echoed: it may be a secret pasted by mistake
                    msg = f"unknown parameter {field!r}; valid for {spec.name}: {', '.join(params_model.model_fields)}"
                rows.append((join_path(f"[{i}]", field), msg, hint))
            continue
        for loc, value in _non_finite(params.model_dump()):
            rows.append((f"[{i}].{field_path(loc)}", f"must be a finite number (got {value})", HINTS["finite_number"]))
    if rows:
        raise_rows(rows)
    return agents


class CombineSpec(_Strict):
    method: Literal["union", "vote"] = "union"
    min_votes: float = Field(1, gt=0.0, description="vote: weighted count of agents a pair needs")
    weights: dict[str, float] = Field(default_factory=dict, description="agent -> vote weight (default 1)")
    per_agent_quota: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict, description="agent -> share of the budget reserved for its picks")
    per_locale_min: int = Field(0, ge=0)
    contrast_per_query: int = Field(0, ge=0, le=10, description="lowest-scored candidates of each picked query "
                                    "added for contrast (they share the budget)")


class PrefilterSpec(_Strict):
    agents: list[str] = Field(min_length=1, description="model-free agents whose flags choose the pairs the model scores")
    explore_share: float = Field(0.05, ge=0.0, le=1.0, description="share of the unflagged pairs scored too, "
                                 "so model-based agents see more than the flagged pairs")


class MiningSpec(_Strict):
    budget: int = Field(160, ge=1)
    max_per_query: int = Field(2, ge=1)
    agents: list[AgentSpec] = Field(min_length=1)
    prefilter: PrefilterSpec | None = None
    combine: CombineSpec = Field(default_factory=CombineSpec)

    @field_validator("agents")
    @classmethod
    def _known(cls, v):
        from serm.mining import REGISTRY

        return _validate_agents(v, REGISTRY, "mining")

    @model_validator(mode="after")
    def _agent_names(self):
        from serm.mining import REGISTRY

        listed = [a.name for a in self.agents]
        errors = []
        for field, names in (("combine.per_agent_quota", self.combine.per_agent_quota),
                             ("combine.weights", self.combine.weights),
                             ("prefilter.agents", self.prefilter.agents if self.prefilter else [])):
            for name in names:
                if name not in listed:
                    errors.append(f"{field}: {name!r} is not a listed mining agent; listed: {', '.join(listed)}")
        for name in self.prefilter.agents if self.prefilter else []:
            if name in listed and REGISTRY[name].needs_model:   # listed: validated and loaded by `_known`
                cheap = sorted(n for n, cls in REGISTRY.usable().items() if not cls.needs_model)
                errors.append(f"prefilter.agents: {name!r} needs the model's scores, so it cannot choose what "
                              f"to score; model-free agents: {', '.join(cheap)}")
        if errors:
            raise ValueError("; ".join(errors))
        return self


class AgreementTuning(_Strict):
    """Choose the agreement thresholds from the measured escalation/accuracy trade-off: the
    agents vote on held-out labelled pairs (cross-fitted, so learned cuts never see the pairs
    they grade); each combination's escalations are counted on the round's candidates and their
    accuracy estimated per vote pattern; the one escalating least while accurate enough is used
    for the round (`serm.annotation.tuning`)."""

    target_accuracy: float = Field(0.95, gt=0.25, le=1.0, description="the accepted candidates' estimated accuracy "
                                   "(per vote pattern, from the labelled pairs) must reach this, as a lower bound")
    confidence: float = Field(0.9, ge=0.5, lt=1.0, description="the bound's one-sided confidence; 0.5 = the estimate itself")
    max_pairs: int = Field(400, ge=20, description="labelled pairs (whole queries, drawn with the seed) the agents vote on")
    min_pairs: int = Field(40, ge=10, description="with fewer labelled pairs the policy's thresholds stay")
    folds: int = Field(2, ge=2, le=10, description="cross-fitting folds (by query) for agents that learn from labels")
    bound: Literal["round", "rate"] = Field("round", description="round: this round's accepted labels reach the "
                                            "target (cautious on small rounds); rate: labels accepted this way do")


class AgreementSpec(_Strict):
    intra_min_share: float = Field(0.66, gt=0.0, le=1.0, description="2 of 3 samples = 0.667")
    inter_min_agents: int = Field(2, ge=1)
    inter_max_spread: int = Field(1, ge=0, le=3)
    inter_min_agreement: float = Field(0.0, ge=0.0, le=1.0, description="the aggregated label's agreement "
                                       "(vote share or posterior) at least; with binary grades the spread gate is all or nothing")
    aggregate: Literal["majority", "dawid_skene", "weighted"] = Field(
        "majority", description="majority vote, Dawid-Skene posterior, or a reliability-weighted vote")
    reliability: Literal["dawid_skene", "human_audit"] = Field(
        "dawid_skene", description="weighted: agent accuracies from Dawid-Skene or from audited human labels")
    tune: AgreementTuning | None = Field(None, description="choose the thresholds above each round from the "
                                         "escalation/accuracy trade-off on labelled pairs; they are then the fallback")


class HumanSpec(_Strict):
    budget: int = Field(40, ge=0, description="pairs people grade per round")
    test_share: float = Field(0.5, ge=0.0, le=1.0, description="files source: the share of the budget asked "
                              "as test labels (whole queries of the batch, kept for the evolving test set, never "
                              "trained on); the rest goes to escalations. Simulated streams have fixed test sets")


class AnnotationSpec(_Strict):
    agents: list[AgentSpec] = Field(min_length=1)
    agreement: AgreementSpec = Field(default_factory=AgreementSpec)
    on_disagreement: Literal["escalate", "drop"] = "escalate"
    human: HumanSpec = Field(default_factory=HumanSpec)
    cache: bool = Field(True, description="reuse votes of the same agent configuration on the same pair")

    @field_validator("agents")
    @classmethod
    def _known(cls, v):
        from serm.annotation import REGISTRY

        return _validate_agents(v, REGISTRY, "annotation")

    @model_validator(mode="after")
    def _enough_agents(self):
        # The `human` agent decides the pairs a reviewer graded and takes no part in agreement.
        voters = [a for a in self.agents if a.name != "human"]
        if self.agreement.inter_min_agents > len(voters):
            raise ValueError(
                f"agreement.inter_min_agents={self.agreement.inter_min_agents} but only "
                f"{len(voters)} agent(s) besides `human` are listed; add agents or lower inter_min_agents"
            )
        return self


class ChecksSpec(_Strict):
    min_agreement: float = Field(0.5, ge=0.0, le=1.0, description="mean agreement of accepted labels at least")
    max_escalated_share: float = Field(0.8, ge=0.0, le=1.0)
    max_grade_kl: float = Field(1.0, gt=0.0, description="KL divergence of the round's grade distribution from "
                                "the labels so far (seed included) at most")
    min_history_labels: int = Field(50, ge=1, description="compare grade distributions only with this many labels so far")
    max_abstention: float = Field(0.95, ge=0.0, le=1.0, description="level-1 abstention rate of any agent at most")
    max_abstention_per_agent: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict, description="agent -> its own abstention bound (e.g. click_evidence, human)")


# --------------------------------------------------------------------------- model
class ModelSpec(_Strict):
    base_model: str = "builtin:minilm-l6"
    max_length: int = Field(128, ge=16, le=512)
    passage: Literal["head", "best_window"] = "best_window"
    window_words: int = Field(64, ge=8, le=512)
    batch_size: int = Field(32, ge=1, le=4096)
    compile: bool = Field(False, description="score through torch.compile (the HF forward, dynamic shapes): "
                          "pays off on a GPU over large batches; compiling costs tens of seconds once")
    precision: Literal["fp32", "int8"] = Field(
        "fp32", description="CPU scoring precision (mining, evaluation, serm score): int8 runs the encoder's "
        "linear layers as dynamic int8 matmuls, each feed-forward's four outlier input channels in fp32 (about 2.2x "
        "fp32's pairs/s on 2 cores; on 5,003 Home Depot pairs Spearman 0.997 to fp32's grades, NDCG@4 change "
        "-0.0021 and -0.0001 in two runs, both inside the noise; a pair's score depends slightly on the batch it is in); training is always fp32, and a GPU "
        "scores in bf16")
    lexical_features: list[Literal["term_coverage", "weighted_term_coverage", "char3_coverage",
                                   "embedding_cosine"]] = Field(
        default_factory=lambda: ["term_coverage", "weighted_term_coverage", "char3_coverage"],
        description="corpus-free lexical features of the whole document (query word and character-trigram "
        "coverage) fused into the grade logits by a learned head (serm.model.lexical); [] = the network alone. "
        "embedding_cosine adds the packaged MiniLM bi-encoder's query-document cosine (scoring then embeds "
        "each distinct query and document once; serm export ships the bi-encoder with the model). "
        "A model saved with a head keeps it")


class UnclickedNegativesSpec(_Strict):
    """Skipped impressions as grade-0 training examples: a document shown above a clicked one,
    never clicked over at least `min_impressions` impressions (the skip-above rule)."""

    max_per_query: int = Field(0, ge=0, le=50, description="at most this many per query; 0 = off")
    min_impressions: int = Field(2, ge=1)


class TrainingSpec(_Strict):
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(4e-5, gt=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1, le=1024)
    grad_accumulation: int = Field(1, ge=1, le=64)
    replay_ratio: float = Field(3.0, ge=0.0)
    validation_share: float = Field(0.1, ge=0.0, lt=0.5)
    class_weighting: bool = True
    head_lr: float = Field(2e-3, ge=0.0, lt=1.0, description="learning rate of the lexical head's weights while the "
                           "network trains at lr (0: the head stays as fitted)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed_epochs: int = Field(3, ge=1, le=100)
    unclicked_negatives: UnclickedNegativesSpec = Field(default_factory=UnclickedNegativesSpec)


class EvaluationSpec(_Strict):
    k: list[int] = Field(default_factory=lambda: [4, 10], min_length=1)

    @field_validator("k")
    @classmethod
    def _positive(cls, v):
        if any(k < 1 for k in v):
            raise ValueError("every k must be >= 1")
        return v


class PromotionSpec(_Strict):
    metric: Literal["ndcg@4", "ndcg@10", "accuracy"] = "ndcg@4"
    min_gain: float = Field(0.002, ge=-1.0, le=1.0)
    max_static_regression: float = Field(0.01, ge=0.0, le=1.0)
    min_test_queries: int = Field(20, ge=1, description="promote only when every test set has this many "
                                  "queries: never promote on noise")
    max_accuracy_regression: float | None = Field(
        0.02, ge=0.0, le=1.0, description="keep production when the candidate's grade accuracy falls by more than "
        "this on any test set (null: not guarded); ranking can improve while grades collapse")
    max_macro_f1_regression: float | None = Field(
        0.02, ge=0.0, le=1.0, description="the same guard for macro-F1 over grades, on every test set (null: not "
        "guarded)")
    significance: Literal["off", "not_worse", "better"] = Field(
        "not_worse", description="a paired randomization test of candidate against production over each test "
        "set's queries, on `metric`: not_worse keeps production when the candidate is significantly worse on any "
        "set; better also needs a significant gain on the evolving test; off skips the test")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="the significance level of `significance`")


# GTO's registration tag, `NAME@vMAJOR.MINOR.PATCH`: SERM's version n is GTO's vn.0.0.
_GTO_TAG = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9/_-]*[a-zA-Z0-9])?@v\{n\}\.0\.0$")


class RetentionSpec(_Strict):
    """Which versions keep their files (`serm gc`); production, the version before it and the
    versions the policy's agents name always stay, and so does everything today's data/ holds."""
    keep_last: int | None = Field(None, ge=1, description="keep the newest N versions")
    keep_within: Duration | None = Field(None, description="rollback window: keep every version created or in "
                                         "production within this long (e.g. 30d)")
    auto: bool = Field(True, description="gc after every round (false: only `serm gc` removes files)")

    @model_validator(mode="after")
    def _some_rule(self):
        if self.keep_last is None and self.keep_within is None:
            raise ValueError("retention needs keep_last (e.g. 10) and/or keep_within (e.g. 30d); "
                             "to keep every version, leave versioning.retention out")
        return self


class VersioningSpec(_Strict):
    remote: str = ".dvc-remote"
    retention: RetentionSpec | None = Field(None, description="which versions keep their files in the DVC cache and "
                                            "remote; unset keeps every version (the disk grows with each one)")
    tag: str = Field("serm-model@v{n}.0.0", description="the git tag of version n, in GTO's format "
                     "NAME@v{n}.0.0 (so `gto show` reads the registry); NAME is the model's artifact name")

    @field_validator("tag")
    @classmethod
    def _gto_tag(cls, v):
        if not _GTO_TAG.match(v):
            raise ValueError(f"tag {v!r} is not GTO's version tag NAME@v{{n}}.0.0; use e.g. 'serm-model@v{{n}}.0.0' "
                             "(NAME: letters, digits, '-', '_', '/'), so gto and deploy jobs can read the versions")
        return v


class Policy(_Strict):
    name: str
    seed: int = Field(13, ge=0, le=2**31 - 1, description="numpy and torch need 0 <= seed + round < 2**32")
    data: DataSpec = Field(default_factory=SimulatedData)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    mining: MiningSpec
    annotation: AnnotationSpec
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    versioning: VersioningSpec = Field(default_factory=VersioningSpec)

    # The folder of the policy file: relative data paths are read from there (`resolve`).
    _base_dir: Any = PrivateAttr(None)

    def resolve(self, value: str | None):
        """A path the policy names (data files, the inbox), relative to the policy file."""
        from pathlib import Path

        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() or self._base_dir is None else Path(self._base_dir) / path

    def hash(self) -> str:
        """Stable short hash of the validated policy (recorded on every label and model)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def json_schema() -> dict:
    """The policy's JSON Schema, for editors (`serm policy schema`): pydantic's, plus what the
    loader accepts before validation (`source: xquad`, or no `source`, is the simulated stream)."""
    schema = Policy.model_json_schema()
    sim = schema["$defs"]["SimulatedData"]["properties"]["source"]
    sim.pop("const", None)
    sim.update(enum=["simulated", "xquad"], description="simulated (xquad: its older name)")
    data = schema["properties"]["data"]
    data.get("discriminator", {}).get("mapping", {}).setdefault("xquad", "#/$defs/SimulatedData")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "SERM evolution policy",
            **{k: v for k, v in schema.items() if k != "title"}}
