"""The evolution policy: one YAML file declares a whole round.

`load_policy(path)` returns a validated `Policy` or raises `PolicyError` listing every
problem with its field path (``mining.agents[1].measure``), the bad value and a fix.
Agents are chosen by name through the registries in `serm.mining` and `serm.annotation`;
an unknown name or parameter lists the valid ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serm.errors import PolicyError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class DataSpec(_Strict):
    source: Literal["xquad"] = "xquad"
    seed_locale: str = "en"
    stream_locales: list[str] = Field(default_factory=lambda: ["es", "de", "tr"], min_length=1)
    queries_per_batch: int = Field(200, ge=1)
    seed_queries: int = Field(200, ge=10)
    test_queries: int = Field(80, ge=5)
    candidates: CandidateSpec = Field(default_factory=CandidateSpec)
    clicks: ClickSpec = Field(default_factory=ClickSpec)

    @model_validator(mode="after")
    def _locales(self):
        from serm.data.xquad import LOCALES

        for loc in [self.seed_locale, *self.stream_locales]:
            if loc not in LOCALES:
                raise ValueError(f"unknown locale {loc!r}; XQuAD has {', '.join(LOCALES)}")
        if self.seed_locale in self.stream_locales:
            raise ValueError(f"seed_locale {self.seed_locale!r} must not also be a stream locale")
        return self


# --------------------------------------------------------------------------- drift
class DetectorSpec(_Strict):
    type: Literal["query_descriptors", "locale_mix", "score", "engagement"]
    columns: list[str] | None = None
    threshold: float = Field(0.1, gt=0.0, le=1.0)
    share_threshold: float = Field(0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _columns(self):
        from monitoring.drift import DETECTOR_COLUMNS

        valid = DETECTOR_COLUMNS[self.type]
        for col in self.columns or []:
            if col not in valid:
                raise ValueError(f"unknown column {col!r} for {self.type}; valid: {', '.join(valid)}")
        return self


class TriggerSpec(_Strict):
    mode: Literal["any", "all"] = "any"
    min_new_pairs: int = Field(500, ge=0)
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


def _validate_agents(agents: list[AgentSpec], registry: dict, kind: str) -> list[AgentSpec]:
    errors = []
    seen = set()
    for i, spec in enumerate(agents):
        if spec.name not in registry:
            errors.append(f"[{i}].name: unknown {kind} agent {spec.name!r}; valid: {', '.join(sorted(registry))}")
            continue
        key = spec.name if spec.name != "llm_judge" else (spec.name, spec.params().get("model"))
        if key in seen:
            errors.append(f"[{i}].name: {kind} agent {spec.name!r} is listed twice")
        seen.add(key)
        params_model = registry[spec.name].Params
        try:
            params_model(**spec.params())
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = f"unknown parameter; valid for {spec.name}: {', '.join(params_model.model_fields)}"
                errors.append(f"[{i}].{loc}: {msg}")
    if errors:
        raise ValueError("; ".join(errors))
    return agents


class CombineSpec(_Strict):
    method: Literal["union", "vote"] = "union"
    min_votes: int = Field(1, ge=1)
    per_agent_quota: dict[str, float] = Field(default_factory=dict)
    per_locale_min: int = Field(0, ge=0)
    contrast_per_query: int = Field(0, ge=0, le=10, description="lowest-scored candidates of each picked query "
                                    "added for contrast (they share the budget)")


class MiningSpec(_Strict):
    budget: int = Field(160, ge=1)
    max_per_query: int = Field(2, ge=1)
    agents: list[AgentSpec] = Field(min_length=1)
    combine: CombineSpec = Field(default_factory=CombineSpec)

    @field_validator("agents")
    @classmethod
    def _known(cls, v):
        from serm.mining import REGISTRY

        return _validate_agents(v, REGISTRY, "mining")


class AgreementSpec(_Strict):
    intra_min_share: float = Field(0.66, gt=0.0, le=1.0, description="2 of 3 samples = 0.667")
    inter_min_agents: int = Field(2, ge=1)
    inter_max_spread: int = Field(1, ge=0, le=3)
    aggregate: Literal["majority"] = "majority"


class HumanSpec(_Strict):
    budget: int = Field(40, ge=0)


class AnnotationSpec(_Strict):
    agents: list[AgentSpec] = Field(min_length=1)
    agreement: AgreementSpec = Field(default_factory=AgreementSpec)
    on_disagreement: Literal["escalate", "drop"] = "escalate"
    human: HumanSpec = Field(default_factory=HumanSpec)

    @field_validator("agents")
    @classmethod
    def _known(cls, v):
        from serm.annotation import REGISTRY

        return _validate_agents(v, REGISTRY, "annotation")

    @model_validator(mode="after")
    def _enough_agents(self):
        if self.agreement.inter_min_agents > len(self.agents):
            raise ValueError(
                f"agreement.inter_min_agents={self.agreement.inter_min_agents} but only "
                f"{len(self.agents)} agent(s) are listed; add agents or lower inter_min_agents"
            )
        return self


class ChecksSpec(_Strict):
    min_agreement: float = Field(0.5, ge=0.0, le=1.0)
    max_escalated_share: float = Field(0.8, ge=0.0, le=1.0)


# --------------------------------------------------------------------------- model
class ModelSpec(_Strict):
    base_model: str = "builtin:minilm-l6"
    max_length: int = Field(128, ge=16, le=512)
    passage: Literal["head", "best_window"] = "best_window"
    window_words: int = Field(64, ge=8, le=512)
    batch_size: int = Field(32, ge=1, le=4096)


class TrainingSpec(_Strict):
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(4e-5, gt=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1, le=1024)
    grad_accumulation: int = Field(1, ge=1, le=64)
    replay_ratio: float = Field(3.0, ge=0.0)
    validation_share: float = Field(0.1, ge=0.0, lt=0.5)
    class_weighting: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed_epochs: int = Field(3, ge=1, le=100)


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


class VersioningSpec(_Strict):
    remote: str = ".dvc-remote"
    tag: str = "serm-model@v{n}"

    @field_validator("tag")
    @classmethod
    def _has_n(cls, v):
        if "{n}" not in v:
            raise ValueError("tag must contain '{n}' (the version number)")
        return v


class Policy(_Strict):
    name: str
    seed: int = 13
    data: DataSpec = Field(default_factory=DataSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    mining: MiningSpec
    annotation: AnnotationSpec
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    versioning: VersioningSpec = Field(default_factory=VersioningSpec)

    def hash(self) -> str:
        """Stable short hash of the validated policy (recorded on every label and model)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------- loading
_HINTS = {
    "missing": "add this field",
    "extra_forbidden": "remove it or fix its spelling",
    "literal_error": "use one of the allowed values",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "bool_parsing": "use true or false",
    "greater_than_equal": "raise the value",
    "greater_than": "raise the value",
    "less_than_equal": "lower the value",
    "less_than": "lower the value",
    "too_short": "add at least one entry",
    "list_type": "use a YAML list: [a, b] or '- a' lines",
    "dict_type": "use a YAML mapping: {key: value}",
    "model_type": "use a YAML mapping: {key: value}",
    "string_type": "use a string",
    "tuple_type": "use a YAML list",
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _errors(exc: ValidationError) -> list[tuple[str, str, str]]:
    rows = []
    for err in exc.errors():
        field = _path(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and err["type"] not in ("missing", "model_type") and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"[:200]
        hint = _HINTS.get(err["type"], "see policies/default.yaml for a working example")
        if err["type"] == "extra_forbidden":
            hint = "remove it or fix its spelling (see policies/default.yaml)"
        rows.append((field, msg, hint))
    return rows


def parse_policy(raw: Any, source: str = "<policy>") -> Policy:
    """Validate an already-parsed mapping."""
    if not isinstance(raw, dict):
        raise PolicyError(source, [("", f"the policy must be a YAML mapping, got {type(raw).__name__}",
                                    "start from policies/default.yaml")])
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(source, _errors(exc)) from None


def load_policy(path: str | Path) -> Policy:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(str(path), [("", "file not found", "pass the path of a policy YAML file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [("", f"cannot read: {exc}", "pass a readable UTF-8 YAML file")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise PolicyError(str(path), [("", f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}",
                                       "fix the YAML syntax (indentation, colons, quotes)")]) from None
    return parse_policy(raw, str(path))
