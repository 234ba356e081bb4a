"""The evolution policy: one YAML file declares a whole round.

`load_policy(path)` returns a validated `Policy` or raises `PolicyError` listing every
problem with its field path (``mining.agents[1].measure``), the bad value and a fix.
Agents are chosen by name through the registries in `serm.mining` and `serm.annotation`;
an unknown name or parameter lists the valid ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from serm.errors import PolicyError


class _Strict(BaseModel):
    # .inf/.nan pass `ge=0` checks and then break the stage that multiplies by them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _raise_rows(rows: list[tuple[str, str, str]]):
    """Fail one validator with several errors, each `(sub-path, message, hint)`; `_errors` lists
    them under the validator's own field, e.g. `mining.agents` + `[1].measure`."""
    summary = "; ".join(f"{sub}: {msg}" for sub, msg, _ in rows)
    raise PydanticCustomError("serm_rows", "{summary}", {"summary": summary, "rows": rows})


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
    type: Literal["query_descriptors", "locale_mix", "score", "engagement", "embedding"]
    columns: list[str] | None = None
    # Per-type default (monitoring.drift.DEFAULT_THRESHOLDS): 0.1, but a p-value of 0.05 for `embedding`.
    threshold: float = Field(0.1, gt=0.0, le=1.0)
    share_threshold: float = Field(0.5, gt=0.0, le=1.0)
    embedder: Literal["auto", "use-m3", "minilm"] = Field(
        "auto", description="embedding only: use-m3 (multilingual), minilm (English), auto = use-m3 if installed")

    @model_validator(mode="before")
    @classmethod
    def _type_defaults(cls, data):
        from monitoring.drift import DEFAULT_THRESHOLDS

        # `type` may be anything a user wrote (a list, a mapping): only a name can have a default.
        if isinstance(data, dict) and "threshold" not in data and isinstance(data.get("type"), str) \
                and data["type"] in DEFAULT_THRESHOLDS:
            data = {**data, "threshold": DEFAULT_THRESHOLDS[data["type"]]}
        return data

    @model_validator(mode="after")
    def _columns(self):
        from monitoring.drift import DETECTOR_COLUMNS

        valid = DETECTOR_COLUMNS[self.type]
        for col in self.columns or []:
            if col not in valid:
                raise ValueError(f"unknown column {col!r} for {self.type}; valid: {', '.join(valid)}")
        return self


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value):
    """Seconds from a number or '90s', '30m', '6h', '1d', '1w'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise PydanticCustomError("duration", "not a duration: use 90s, 30m, 6h, 1d or 1w, or a number of seconds")
    return float(m.group(1)) * _SECONDS[m.group(2) or "s"]


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0.0)]


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


def _validate_agents(agents: list[AgentSpec], registry: dict, kind: str) -> list[AgentSpec]:
    rows = []
    seen = set()
    for i, spec in enumerate(agents):
        if spec.name not in registry:
            rows.append((f"[{i}].name", f"unknown {kind} agent {_show(spec.name)}; valid: {', '.join(sorted(registry))}",
                         "use one of the valid names"))
            continue
        model = spec.params().get("model") if spec.name == "llm_judge" else None
        key = (spec.name, model if isinstance(model, str) else repr(model))
        if key in seen:
            rows.append((f"[{i}].name", f"{kind} agent {spec.name!r} is listed twice", "remove one of the entries"))
        seen.add(key)
        params_model = registry[spec.name].Params
        try:
            params = params_model.model_validate(spec.params())
        except ValidationError as exc:
            unknown = {_path(tuple(e["loc"])) for e in exc.errors() if e["type"] == "extra_forbidden"}
            for field, msg, hint in _errors(exc):
                if field in unknown:   # the value is not echoed: it may be a secret pasted by mistake
                    msg = f"unknown parameter {field!r}; valid for {spec.name}: {', '.join(params_model.model_fields)}"
                rows.append((_join(f"[{i}]", field), msg, hint))
            continue
        for loc, value in _non_finite(params.model_dump()):
            rows.append((f"[{i}].{_path(loc)}", f"must be a finite number (got {value})", _HINTS["finite_number"]))
    if rows:
        _raise_rows(rows)
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
        cheap = sorted(n for n in REGISTRY if not REGISTRY[n].needs_model)
        for name in self.prefilter.agents if self.prefilter else []:
            if name in REGISTRY and REGISTRY[name].needs_model:
                errors.append(f"prefilter.agents: {name!r} needs the model's scores, so it cannot choose what "
                              f"to score; model-free agents: {', '.join(cheap)}")
        if errors:
            raise ValueError("; ".join(errors))
        return self


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


class HumanSpec(_Strict):
    budget: int = Field(40, ge=0)


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
    seed: int = Field(13, ge=0, le=2**31 - 1, description="numpy and torch need 0 <= seed + round < 2**32")
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
    "too_long": "remove the extra entries",
    "finite_number": "use a finite number (not .inf or .nan)",
    "invalid_key": "use a text key (quote it: '1': ...)",
    "string_unicode": "use UTF-8 text",
    "int_from_float": "use a whole number",
    "bool_type": "use true or false",
    "duration": "write a duration: 90s, 30m, 6h, 1d, 1w (a bare number is seconds)",
}
_DEFAULT_HINT = "see policies/default.yaml for a working example"
MAX_POLICY_BYTES = 1_000_000   # a policy is a few KB; anything this large is the wrong file


def _show(value) -> str:
    """A bounded repr: a value pasted by mistake (or a YAML alias bomb) cannot flood the error."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxtuple, r.maxdict, r.maxlevel = 60, 60, 6, 6, 4, 3
    return r.repr(value)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif part in ("function-after", "function-before"):
            continue
        else:
            name = part if isinstance(part, str) and part.isprintable() and part else _show(part)
            out += ("." if out else "") + name
    return out


def _join(field: str, sub: str) -> str:
    if not field or not sub:
        return field or sub
    return field + sub if sub.startswith("[") else f"{field}.{sub}"


def _shows_input(value) -> bool:
    """Echo scalars and flat lists; a mapping (or list of them) may hold a secret written by mistake."""
    if isinstance(value, (list, tuple, set)):
        return all(not isinstance(v, (dict, list, tuple, set)) for v in list(value)[:50])
    return not isinstance(value, dict)


def _errors(exc: ValidationError) -> list[tuple[str, str, str]]:
    rows = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "serm_rows":
            rows.extend((_join(_path(loc), sub), msg, hint) for sub, msg, hint in err["ctx"]["rows"])
            continue
        if err["type"] == "invalid_key":   # the input is the key itself, which ends the path
            field = _join(_path(loc[:-1]), _show(err["input"]))
            rows.append((field, f"keys must be text (got {_show(err['input'])})", _HINTS["invalid_key"]))
            continue
        if err["type"] == "string_unicode" and isinstance(err["input"], str):
            continue                       # a lone surrogate: `_scan` reports it at its exact path
        field = _path(loc)
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "model_type":
            msg = f"should be a mapping of fields (got {type(value).__name__})"
        elif "input" in err and err["type"] != "missing" and _shows_input(value):
            msg += f" (got {_show(value)})"
        hint = _HINTS.get(err["type"], _DEFAULT_HINT)
        if err["type"] == "extra_forbidden":
            hint = "remove it or fix its spelling (see policies/default.yaml)"
        rows.append((field, msg, hint))
    return rows


# Keys that would hold a credential. Keys come from the environment: `api_key_env: NAME`.
_SECRET_KEY = re.compile(r"(^|_)(api_?key|secret|secret_key|password|passwd|token|credentials?)$", re.IGNORECASE)


def _scan(value, loc: tuple = (), seen: set | None = None):
    """What the models cannot see: keys holding a credential (`secret`, their value is never
    read) and text that is not valid UTF-8 (`surrogate`, from a "\\udXXX" escape in YAML)."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield "surrogate", loc
        return
    if id(value) in seen:          # YAML aliases share objects and may be recursive
        return
    if isinstance(value, dict):
        seen.add(id(value))
        for k, v in value.items():
            if isinstance(k, str) and _SECRET_KEY.search(k):
                yield "secret", (*loc, k)
            else:
                yield from _scan(k, (*loc, k), seen) if isinstance(k, str) else ()
                yield from _scan(v, (*loc, k), seen)
    elif isinstance(value, (list, tuple)):
        seen.add(id(value))
        for i, v in enumerate(value):
            yield from _scan(v, (*loc, i), seen)


def parse_policy(raw: Any, source: str = "<policy>") -> Policy:
    """Validate an already-parsed mapping."""
    if raw is None:
        raise PolicyError(source, [("", "the policy is empty", "start from a copy of policies/default.yaml")])
    if not isinstance(raw, dict):
        raise PolicyError(source, [("", f"the policy must be a YAML mapping, got {type(raw).__name__}",
                                    "start from policies/default.yaml")])
    found = list(_scan(raw))
    secrets = {_path(loc): loc[-1] for kind, loc in found if kind == "secret"}
    rows = [(field, "a credential written into the policy (value not shown); policies are committed "
             "to git and copied into every round", f"put it in an environment variable and name that "
             f"variable instead: `{key.lower()}_env: NAME`") for field, key in secrets.items()]
    rows += [(_path(loc), "text with a lone surrogate (not valid UTF-8)", "remove the \\uD800-\\uDFFF escape")
             for kind, loc in dict.fromkeys(found) if kind == "surrogate"]
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        # The model rejects those keys too ("unknown field"); report them once, as secrets.
        rows += [row for row in _errors(exc) if row[0] not in secrets]
    if rows:
        raise PolicyError(source, rows)
    return policy


def _yaml_loader():
    """PyYAML's SafeLoader, stricter: a key given twice is an error (PyYAML keeps the last one
    silently), and a bad `!!int`/`!!float`/date value is a YAML error with its line instead of a
    bare ValueError."""
    import yaml
    from yaml.constructor import ConstructorError

    class PolicyYAMLError(ConstructorError):
        def __init__(self, problem, mark, hint):
            super().__init__(None, None, problem, mark)
            self.hint = hint

    class PolicyLoader(yaml.SafeLoader):
        def construct_object(self, node, deep=False):
            try:
                return super().construct_object(node, deep)
            except (ValueError, OverflowError, LookupError, TypeError) as exc:
                raise PolicyYAMLError(f"cannot read {_show(node.value)}: {exc}", node.start_mark,
                                      "fix the value, or quote it to make it text") from None

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first = {}
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node)
                    if key in first:
                        raise PolicyYAMLError(f"key {_show(key)} appears twice (first on line "
                                              f"{first[key].line + 1}); YAML would silently keep the last",
                                              key_node.start_mark, "keep one of the two")
                    first[key] = key_node.start_mark
            return super().construct_mapping(node, deep)

    return PolicyLoader


def load_policy(path: str | Path) -> Policy:
    import yaml

    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(source, [("", f"the file is {size:,} bytes; a policy is a few KB",
                                        "pass the policy YAML, not a data file")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(source, [("", "file not found", "pass the path of a policy YAML file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(source, [("", f"cannot read: {exc}", "pass a readable UTF-8 YAML file")]) from None
    try:
        raw = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, yaml.reader.ReaderError):   # a control character: no mark, a position
            where = f"line {text.count(chr(10), 0, exc.position) + 1}"
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            problem = f"character #x{code:04x} is not allowed in YAML text"
        hint = getattr(exc, "hint", "fix the YAML syntax (indentation, colons, quotes)")
        raise PolicyError(source, [("", f"not valid YAML at {where}: {problem}", hint)]) from None
    except RecursionError:
        raise PolicyError(source, [("", "the YAML nests too deeply to read",
                                    "a policy is a few levels deep: look for unclosed [ or {")]) from None
    return parse_policy(raw, source)
