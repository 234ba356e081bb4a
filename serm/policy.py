"""The evolution policy: one YAML file declares a whole round.

`load_policy(path)` returns a validated `Policy` or raises `PolicyError` listing every
problem with its field path (``mining.agents[1].measure``), the bad value and a fix.
The models live in `serm.policy_schema` and the error rows in `serm.policy_errors`; this
module reads the file (a stricter YAML loader, credentials and broken text refused before
validation) and re-exports the schema, so `from serm.policy import MiningSpec` keeps working.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serm.errors import PolicyError
from serm.policy_errors import error_rows, field_path, show
from serm.policy_schema import (
    DEFAULT_THRESHOLDS,
    DETECTOR_COLUMNS,
    DETECTOR_TYPES,
    AgentSpec,
    AgreementSpec,
    AgreementTuning,
    AnnotationSpec,
    CandidateSpec,
    ChecksSpec,
    ClickSpec,
    CombineSpec,
    DataSpec,
    FilesData,
    DetectorSpec,
    DetectorType,
    DriftSpec,
    Duration,
    EvaluationSpec,
    HumanSpec,
    MiningSpec,
    ModelSpec,
    Policy,
    PrefilterSpec,
    PromotionSpec,
    SimulatedData,
    TrainingSpec,
    TriggerSpec,
    VersioningSpec,
    duration,
)

__all__ = [
    "DEFAULT_THRESHOLDS", "DETECTOR_COLUMNS", "DETECTOR_TYPES", "MAX_POLICY_BYTES", "AgentSpec", "AgreementSpec", "AgreementTuning",
    "AnnotationSpec", "CandidateSpec", "ChecksSpec", "ClickSpec", "CombineSpec", "DataSpec", "DetectorSpec", "FilesData", "SimulatedData",
    "DetectorType", "DriftSpec", "Duration", "EvaluationSpec", "HumanSpec", "MiningSpec", "ModelSpec", "Policy",
    "PolicyError", "PrefilterSpec", "PromotionSpec", "TrainingSpec", "TriggerSpec", "VersioningSpec", "duration",
    "load_policy", "parse_policy",
]

MAX_POLICY_BYTES = 1_000_000   # a policy is a few KB; anything this large is the wrong file


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
    secrets = {field_path(loc): loc[-1] for kind, loc in found if kind == "secret"}
    rows = [(field, "a credential written into the policy (value not shown); policies are committed "
             "to git and copied into every round", f"put it in an environment variable and name that "
             f"variable instead: `{key.lower()}_env: NAME`") for field, key in secrets.items()]
    rows += [(field_path(loc), "text with a lone surrogate (not valid UTF-8)", "remove the \\uD800-\\uDFFF escape")
             for kind, loc in dict.fromkeys(found) if kind == "surrogate"]
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        # The model rejects those keys too ("unknown field"); report them once, as secrets.
        rows += [row for row in error_rows(exc) if row[0] not in secrets]
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
                raise PolicyYAMLError(f"cannot read {show(node.value)}: {exc}", node.start_mark,
                                      "fix the value, or quote it to make it text") from None

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first = {}
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node)
                    if key in first:
                        raise PolicyYAMLError(f"key {show(key)} appears twice (first on line "
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
    policy = parse_policy(raw, source)
    policy._base_dir = path.resolve().parent
    return policy
