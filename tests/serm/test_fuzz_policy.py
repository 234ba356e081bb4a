"""Property-based fuzzing of the policy loader (hypothesis, derandomized so CI is reproducible).

Each case mutates policies/default.yaml: keys deleted, values replaced by wrong types (text, lists,
null, huge and negative numbers, .inf/.nan, nested mappings, bytes, dates), unknown keys, unknown
agent names and parameters, or the file's text itself (truncated, spliced with random characters
and bytes, non-UTF-8, empty, a top-level list, runaway nesting, duplicated keys).

The property: `load_policy` returns a `Policy` or raises `PolicyError` (never another exception),
and every error names a field path (or is a file-level error, the file being named in the header)
and carries a fix, each on its own line.
"""

import copy
import datetime
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serm.errors import PolicyError, SermError
from serm.policy import Policy, load_policy, parse_policy

from tests.conftest import ROOT

DEFAULT_TEXT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
DEFAULT = yaml.safe_load(DEFAULT_TEXT)
FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Messages of the errors that concern the whole file rather than one field.
FILE_LEVEL = ("file not found", "cannot read", "not valid YAML", "the YAML nests too deeply", "the policy is empty",
              "the policy must be a YAML mapping", "the file is")


def _paths(value, loc=()):
    """Every location in the default policy: mapping keys and list items."""
    yield loc
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*loc, i))


PATHS = [p for p in _paths(DEFAULT) if p]


def _at(raw, loc):
    for part in loc:
        raw = raw[part]
    return raw


MAPPINGS = [p for p in [(), *PATHS] if isinstance(_at(DEFAULT, p), dict)]
AGENT_LISTS = [("mining", "agents"), ("annotation", "agents")]

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([-1, 0, 2**31, 2**63, 10**30, -(10**30), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "yes", "1e400", "inf", "-.inf", "NaN", "0x1F", "2026-13-45", "a\ud800b",
                     "x" * 5000, "{n}", "ndcg@4", "entropy", "es", "\n\t", "~", "null"]),
    st.binary(max_size=8), st.just(datetime.date(2026, 1, 1)),
)
bad_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
keys = st.one_of(st.text(min_size=1, max_size=12), st.integers(-3, 3), st.none(), st.booleans(),
                 st.sampled_from(["trainnig", "params", "model_config", "__dict__", "name", "a\nb", "\ud800"]))


@st.composite
def mutated_policy(draw):
    raw = copy.deepcopy(DEFAULT)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "replace", "replace", "unknown_key", "agent_name", "agent_param"]))
        try:
            if op == "delete":
                loc = draw(st.sampled_from(PATHS))
                parent = _at(raw, loc[:-1])
                del parent[loc[-1]]
            elif op == "replace":
                loc = draw(st.sampled_from(PATHS))
                _at(raw, loc[:-1])[loc[-1]] = draw(bad_values)
            elif op == "unknown_key":
                _at(raw, draw(st.sampled_from(MAPPINGS)))[draw(keys)] = draw(bad_values)
            elif op == "agent_name":
                agents = _at(raw, draw(st.sampled_from(AGENT_LISTS)))
                agents[draw(st.integers(0, len(agents) - 1))]["name"] = draw(st.one_of(
                    st.text(max_size=10), st.sampled_from(["oracle", "llm_judge", "lexical", "uncertainty"]),
                    bad_values))
            else:
                agents = _at(raw, draw(st.sampled_from(AGENT_LISTS)))
                agents[draw(st.integers(0, len(agents) - 1))][draw(keys)] = draw(bad_values)
        except (KeyError, IndexError, TypeError, ValueError):
            pass   # an earlier mutation removed or retyped the target: keep what we have
    return raw


TOTALS = {"cases": 0, "valid": 0, "refused": 0, "errors": 0, "field_errors": 0, "file_errors": 0}


@pytest.fixture(scope="module", autouse=True)
def report_totals(request):
    """After the module: how many policies were checked and what came of them (README figures)."""
    yield
    if TOTALS["cases"]:
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            request.config.pluginmanager.get_plugin("terminalreporter").write_line(
                "policy fuzzing: {cases} policies checked ({valid} valid, {refused} refused with {errors} errors: "
                "{field_errors} naming a field, {file_errors} about the whole file; 0 other exceptions)".format(**TOTALS))


def check_outcome(call, source: str):
    """The property. Returns the Policy or the PolicyError."""
    TOTALS["cases"] += 1
    try:
        result = call()
    except PolicyError as exc:
        assert isinstance(exc, SermError)
        assert exc.errors, "a PolicyError lists at least one error"
        text = str(exc)
        assert text.split("\n")[0].startswith(f"{source}: "), "the header names the file"
        for field, message, hint in exc.errors:
            for part in (field, message, hint):
                assert isinstance(part, str) and "\n" not in part and "\r" not in part, (field, message, hint)
            assert message.strip() and hint.strip(), (field, message, hint)
            if not field:
                assert message.startswith(FILE_LEVEL), f"a field-less error must concern the whole file: {message}"
        # one "field: message" line and one "fix: hint" line per error, after the header
        assert len(text.split("\n")) == 1 + 2 * len(exc.errors)
        TOTALS["refused"] += 1
        TOTALS["errors"] += len(exc.errors)
        TOTALS["field_errors"] += sum(1 for f, _, _ in exc.errors if f)
        TOTALS["file_errors"] += sum(1 for f, _, _ in exc.errors if not f)
        return exc
    TOTALS["valid"] += 1
    assert isinstance(result, Policy)
    assert parse_policy(result.model_dump(mode="json")).hash() == result.hash(), "a valid policy re-validates"
    return result


@FUZZ
@given(raw=mutated_policy(), via_file=st.integers(0, 3))
def test_fuzz_mutated_policies(raw, via_file, tmp_path_factory):
    check_outcome(lambda: parse_policy(raw, "fuzz.yaml"), "fuzz.yaml")
    if via_file:    # one case in four also goes through YAML text and load_policy (30 ms each)
        return
    try:
        text = yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return
    f = tmp_path_factory.mktemp("p") / "policy.yaml"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_outcome(lambda: load_policy(f), str(f))


@st.composite
def mutated_text(draw):
    """The policy file's bytes, damaged."""
    data = DEFAULT_TEXT.encode("utf-8")
    op = draw(st.sampled_from(["truncate", "splice_text", "splice_bytes", "drop_line", "dup_line",
                               "indent", "encode", "random", "fixed"]))
    lines = data.split(b"\n")
    if op == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif op in ("splice_text", "splice_bytes"):
        at = draw(st.integers(0, len(data)))
        piece = (draw(st.text(max_size=6)).encode("utf-8", "surrogatepass") if op == "splice_text"
                 else draw(st.binary(min_size=1, max_size=4)))
        data = data[:at] + piece + data[at + draw(st.integers(0, 3)):]
    elif op in ("drop_line", "dup_line", "indent"):
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop_line":
            del lines[i]
        elif op == "dup_line":
            lines.insert(i, lines[i])
        else:
            lines[i] = b" " * draw(st.integers(1, 3)) + lines[i]
        data = b"\n".join(lines)
    elif op == "encode":
        data = DEFAULT_TEXT.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig"])))
        data = data.replace(b"name: default", "name: défault".encode("latin-1"))
    elif op == "random":
        data = draw(st.binary(max_size=200))
    else:
        data = draw(st.sampled_from([
            b"", b"\n", b"# only a comment\n", b"- a\n- b\n", b"42\n", b"null\n", b"[[[[[\n",
            b"name: " + b"[" * 3000 + b"]" * 3000 + b"\n", b"a: " + b"{b: " * 2000 + b"1" + b"}" * 2000,
            b"seed: !!int abc\n", b"seed: !!float x\n", b"name: 2026-13-45\n", b"seed: !!bool maybe\n",
            b"seed: " + b"9" * 5000 + b"\n", b"name: !!python/object/apply:os.system ['true']\n",
            b"a: &a [*a]\nname: *a\n", b"? [a, b]\n: 1\n", b"a: {<<: 1}\n", b'name: "\\ud800"\n',
            b"\x00", b"name: a\x07b\n", b"\xff\xfe\x00\x00", b"name: x\nname: y\n",
            b"a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
            b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\nname: *f\nseed: *f\n",
        ]))
    return data


@settings(FUZZ, max_examples=300)
@given(data=mutated_text())
def test_fuzz_damaged_files(data, tmp_path_factory):
    f = tmp_path_factory.mktemp("p") / "policy.yaml"
    f.write_bytes(data)
    check_outcome(lambda: load_policy(f), str(f))


def test_file_level_errors(tmp_path):
    """A few damaged files by name, with what their error must say."""
    cases = {
        "empty.yaml": (b"", "the policy is empty"),
        "list.yaml": (b"- a\n", "must be a YAML mapping, got list"),
        "latin1.yaml": ("name: défault\n".encode("latin-1"), "cannot read"),
        "deep.yaml": (b"name: " + b"[" * 3000 + b"]" * 3000, "nests too deeply"),
        "badint.yaml": (b"seed: !!int abc\n", "line 1"),
        "date.yaml": (b"name: 2026-13-45\n", "line 1"),
        "dup.yaml": (b"name: x\nseed: 1\nname: y\n", "key 'name' appears twice (first on line 1)"),
        "ctrl.yaml": (b"name: ok\nseed: a\x07b\n", "line 2"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        exc = check_outcome(lambda: load_policy(tmp_path / name), str(tmp_path / name))
        assert isinstance(exc, PolicyError) and needle in str(exc), (name, str(exc))
    assert "file not found" in str(check_outcome(lambda: load_policy(tmp_path / "nope.yaml"),
                                                 str(tmp_path / "nope.yaml")))


def test_field_errors_are_precise():
    raw = copy.deepcopy(DEFAULT)
    raw["training"]["replay_ratio"] = float("inf")
    raw["seed"] = -1
    raw["mining"]["agents"][0]["min_dwell_s"] = float("nan")
    raw["checks"][3] = "x"
    raw["annotation"]["agents"][0]["thresholds"] = [0.1, "x" * 10_000, 0.3]
    raw["data"]["stream_locales"] = "a\ud800"
    exc = check_outcome(lambda: parse_policy(raw, "p.yaml"), "p.yaml")
    fields = {f: (m, h) for f, m, h in exc.errors}
    assert "finite" in fields["training.replay_ratio"][0]
    assert "seed" in fields
    assert "nan" in fields["mining.agents[0].min_dwell_s"][0]
    assert "keys must be text" in fields["checks.3"][0]
    assert "annotation.agents[0].thresholds[1]" in fields
    assert len(str(exc)) < 3000, "a huge value is shown shortened"
    assert "data.stream_locales" in fields


def test_cli_bad_policy_exits_non_zero_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: x\nmining: {budget: -3, agents: [{name: oracle}]}\nseed: !!int abc\n\xff")
    serm = [str(ROOT / ".venv" / "bin" / "serm")] if (ROOT / ".venv" / "bin" / "serm").exists() \
        else [sys.executable, "-m", "serm.cli"]
    for data in (bad.read_bytes(), b"name: x\nmining: {budget: -3, agents: [{name: oracle}]}\n", b"- a\n"):
        bad.write_bytes(data)
        res = subprocess.run([*serm, "policy", "validate", str(bad)], capture_output=True, text=True, timeout=120)
        assert res.returncode != 0
        assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")
        assert "fix:" in res.stderr
