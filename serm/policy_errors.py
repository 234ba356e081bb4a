"""Policy error rows: each problem as `(field path, message, fix)`, the way `PolicyError` prints it.

`error_rows` turns a pydantic `ValidationError` into rows (``mining.agents[1].measure``, the
message with the bad value when it is safe to echo, a hint); `raise_rows` lets one validator
report several rows at once. The schema (`serm.policy_schema`) and the loader (`serm.policy`)
both build their messages here, so every policy error reads the same.
"""

from __future__ import annotations

import reprlib

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

HINTS = {
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
    "model_attributes_type": "use a YAML mapping: {key: value}",
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
DEFAULT_HINT = "see policies/default.yaml for a working example"
# Tagged unions put the chosen member's tag in an error's location (`data.files.documents`);
# the policy's author wrote `data.documents`, so the tag is left out of the path.
UNION_TAGS = {"data": ("simulated", "files")}
SOURCE_HINT = ("simulated: the shipped XQuAD stream, or a judgments file replayed as a stream "
               "(data.judgments); files: your own documents, judgments and event logs "
               "(data.documents, data.seed_judgments, data.static_test; see examples/own-data/policy.yaml)")


def show(value) -> str:
    """A bounded repr: a value pasted by mistake (or a YAML alias bomb) cannot flood the error."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxtuple, r.maxdict, r.maxlevel = 60, 60, 6, 6, 4, 3
    return r.repr(value)


def field_path(loc: tuple) -> str:
    """`("mining", "agents", 1, "measure")` -> `mining.agents[1].measure`."""
    out = ""
    if len(loc) > 1 and loc[1] in UNION_TAGS.get(loc[0], ()):
        loc = (loc[0], *loc[2:])
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif part in ("function-after", "function-before"):
            continue
        else:
            name = part if isinstance(part, str) and part.isprintable() and part else show(part)
            out += ("." if out else "") + name
    return out


def join_path(field: str, sub: str) -> str:
    """`mining.agents` + `[1].measure` -> `mining.agents[1].measure`."""
    if not field or not sub:
        return field or sub
    return field + sub if sub.startswith("[") else f"{field}.{sub}"


def raise_rows(rows: list[tuple[str, str, str]]):
    """Fail one validator with several errors, each `(sub-path, message, hint)`; `error_rows`
    lists them under the validator's own field, e.g. `mining.agents` + `[1].measure`."""
    summary = "; ".join(f"{sub}: {msg}" for sub, msg, _ in rows)
    raise PydanticCustomError("serm_rows", "{summary}", {"summary": summary, "rows": rows})


def _shows_input(value) -> bool:
    """Echo scalars and flat lists; a mapping (or list of them) may hold a secret written by mistake."""
    if isinstance(value, (list, tuple, set)):
        return all(not isinstance(v, (dict, list, tuple, set)) for v in list(value)[:50])
    return not isinstance(value, dict)


def error_rows(exc: ValidationError) -> list[tuple[str, str, str]]:
    """One `(field path, message, fix)` per error of `exc`."""
    rows = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "serm_rows":
            rows.extend((join_path(field_path(loc), sub), msg, hint) for sub, msg, hint in err["ctx"]["rows"])
            continue
        if err["type"] == "invalid_key":   # the input is the key itself, which ends the path
            field = join_path(field_path(loc[:-1]), show(err["input"]))
            rows.append((field, f"keys must be text (got {show(err['input'])})", HINTS["invalid_key"]))
            continue
        if err["type"] == "string_unicode" and isinstance(err["input"], str):
            continue                       # a lone surrogate: the loader's scan reports it at its exact path
        field = field_path(loc)
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "union_tag_invalid":
            tag = err["ctx"]["discriminator"].strip("'")
            got = value.get(tag) if isinstance(value, dict) else value
            msg = f"unknown {tag} {show(got)}; valid: {err['ctx']['expected_tags']}"
            rows.append((join_path(field, tag), msg, SOURCE_HINT))
            continue
        if err["type"] == "model_type":
            msg = f"should be a mapping of fields (got {type(value).__name__})"
        elif "input" in err and err["type"] != "missing" and _shows_input(value):
            msg += f" (got {show(value)})"
        hint = HINTS.get(err["type"], DEFAULT_HINT)
        if err["type"] == "extra_forbidden":
            hint = "remove it or fix its spelling (see policies/default.yaml)"
        rows.append((field, msg, hint))
    return rows
