"""Plugins from installed packages (`serm.plugins`): agents and drift detectors declared as entry
points are found lazily, validated like built-ins, reported clearly when they clash or break,
and run in a real round under kfp.local, whose stages are subprocesses.

The example package (tests/plugins/serm_plugin_example) is installed with `pip install --target`
into a temp folder, never into the project's environment: in-process tests put that folder on
`sys.path`, the round puts it on PYTHONPATH, so the serm CLI and every kfp.local stage it starts
find its `.dist-info`. Broken and clashing plugins are hand-written `.dist-info` folders.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serm import plugins
from serm.errors import PolicyError
from serm.policy import DetectorSpec, DriftSpec, parse_policy

from tests.conftest import ROOT
from tests.reliability_workspaces import initialised_copy, serm, write_policy

EXAMPLE = ROOT / "tests" / "plugins" / "serm_plugin_example"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package installed into a throwaway folder (built from a copy: setuptools
    writes build/ and *.egg-info next to the sources)."""
    tmp = tmp_path_factory.mktemp("plugin-site")
    shutil.copytree(EXAMPLE, tmp / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(tmp / "site"), str(tmp / "src")],
                   check=True, capture_output=True, text=True, timeout=300)
    assert list((tmp / "site").glob("serm_plugin_example-0.1.0.dist-info/entry_points.txt"))
    return tmp / "site"


@pytest.fixture
def on_path(monkeypatch):
    """Put folders on sys.path for one test; entry points are re-read before and after."""
    def add(*folders: Path):
        for folder in folders:
            monkeypatch.syspath_prepend(str(folder))
        plugins.entry_points.cache_clear()

    yield add
    plugins.entry_points.cache_clear()


def fake_package(root: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
    """A minimal installed distribution: `NAME-0.1.dist-info` (METADATA, entry_points.txt) and
    top-level modules, in `root`."""
    dist = root / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{n} = {target}\n" for n, target in eps.items()) + "\n"
        for group, eps in entry_points.items()))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return root


def default_raw() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())


def policy_errors(raw) -> dict[str, tuple[str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(raw, "p.yaml")
    for field, message, hint in info.value.errors:
        assert "\n" not in message and "\n" not in hint and hint.strip()
    return {field: (message, hint) for field, message, hint in info.value.errors}


# --------------------------------------------------------------------------- discovery and validation
def test_unknown_names_list_the_installed_plugins(site, on_path):
    on_path(site)
    raw = default_raw()
    raw["mining"]["agents"][0]["name"] = "oracle"
    raw["annotation"]["agents"][0]["name"] = "oracle"
    raw["drift"]["detectors"][0]["type"] = "oracle"
    errors = policy_errors(raw)
    mining, hint = errors["mining.agents[0].name"]
    assert mining.startswith("unknown mining agent 'oracle'; valid:") and "long_queries" in mining \
        and "user_feedback" in mining and "serm.mining_agents" in hint
    assert "word_overlap" in errors["annotation.agents[0].name"][0] and "lexical" in errors["annotation.agents[0].name"][0]
    drift = errors["drift.detectors[0].type"][0]
    assert drift.startswith("unknown drift detector type 'oracle'; valid: query_descriptors")
    assert "query_digits" in drift and "mean_score_shift" in drift


def test_a_plugin_policy_validates_with_plugin_defaults(site, on_path):
    from serm.annotation import REGISTRY as ANNOTATION
    from serm.mining import REGISTRY as MINING
    from serm.policy_schema import DETECTORS, installed_plugins

    on_path(site)
    raw = default_raw()
    raw["mining"]["agents"].append({"name": "long_queries", "min_words": 4})
    raw["mining"]["prefilter"] = {"agents": ["long_queries"]}
    raw["annotation"]["agents"].append({"name": "word_overlap"})
    raw["drift"]["detectors"] += [{"type": "query_digits"}, {"type": "mean_score_shift", "threshold": 0.5}]
    policy = parse_policy(raw, "p.yaml")
    dets = {d.type: d for d in policy.drift.detectors}
    assert dets["query_digits"].threshold == 0.05, "the plugin's own default threshold"
    assert dets["mean_score_shift"].threshold == 0.5
    assert json.loads(json.dumps(policy.model_dump(mode="json")))["drift"]["detectors"][-1]["type"] == "mean_score_shift"
    assert parse_policy(policy.model_dump(mode="json")).hash() == policy.hash()
    assert MINING["long_queries"].__module__ == "serm_plugin_example.miner"
    assert "serm-plugin-example 0.1.0" in ANNOTATION.origin("word_overlap")
    assert DETECTORS.is_plugin("query_digits") and not DETECTORS.is_plugin("score")
    with pytest.raises(ValueError, match="unknown column 'ctr' for query_digits; valid: digit_share"):
        DetectorSpec(type="query_digits", columns=["ctr"])
    listed = installed_plugins()
    assert len(listed) == 4 and any(line.startswith("mining agent long_queries: entry point") for line in listed)
    # The policy's JSON schema still builds; `type` is a string whose description names the built-ins.
    assert "query_descriptors" in DriftSpec.model_json_schema()["$defs"]["DetectorSpec"]["properties"]["type"]["description"]


def test_a_plugin_with_a_built_in_name_is_an_error_naming_its_package(tmp_path, on_path):
    fake_package(tmp_path, "clash-pkg", {"serm.annotation_agents": {"lexical": "clash_judge:Judge"}},
                 {"clash_judge": "raise RuntimeError('never imported: the clash is found from the name')\n"})
    on_path(tmp_path)
    errors = policy_errors(default_raw())
    message, hint = errors["annotation.agents"]
    assert "clash-pkg 0.1" in message and "built-in annotation agent 'lexical'" in message and "clash_judge:Judge" in message
    assert "pip uninstall clash-pkg" in hint
    assert "clash_judge" not in sys.modules


def test_two_packages_with_one_name_are_an_error(tmp_path, on_path):
    for pkg in ("twin-a", "twin-b"):
        fake_package(tmp_path / pkg, pkg, {"serm.drift_detectors": {"twin": f"{pkg.replace('-', '_')}:D"}}, {})
    on_path(tmp_path / "twin-a", tmp_path / "twin-b")
    raw = default_raw()
    message = policy_errors(raw | {"drift": {"detectors": [{"type": "twin"}]}})["drift.detectors[0].type"][0]
    assert "two installed packages declare the drift detector 'twin'" in message
    assert "twin-a 0.1" in message and "twin-b 0.1" in message


def test_a_broken_plugin_fails_only_where_it_is_used(tmp_path, on_path):
    fake_package(tmp_path, "broken-pkg", {
        "serm.mining_agents": {"broken_miner": "broken_miner_mod:Miner", "not_an_agent": "plain_mod:Thing",
                               "misnamed": "plain_mod:Misnamed"},
    }, {"broken_miner_mod": "import serm_dependency_that_is_missing\n",
        "plain_mod": """
            from serm.mining.base import MiningAgent

            class Thing:
                pass

            class Misnamed(MiningAgent):
                name = "something_else"

                def select(self, ctx):
                    raise NotImplementedError
            """})
    on_path(tmp_path)
    raw = default_raw()
    parse_policy(raw, "p.yaml")   # not listed: never imported
    assert "broken_miner_mod" not in sys.modules
    bad = copy.deepcopy(raw)
    bad["mining"]["agents"] += [{"name": "broken_miner"}, {"name": "not_an_agent"}, {"name": "misnamed"}]
    n = len(raw["mining"]["agents"])
    errors = policy_errors(bad)
    message, hint = errors[f"mining.agents[{n}].name"]
    assert message.startswith("the mining agent 'broken_miner' failed to load: ModuleNotFoundError: "
                              "No module named 'serm_dependency_that_is_missing'")
    assert "entry point broken_miner = 'broken_miner_mod:Miner' (group serm.mining_agents) of package broken-pkg 0.1" \
        in message
    assert "broken-pkg" in hint and "remove 'broken_miner' from the policy" in hint
    assert "not a serm.mining.base.MiningAgent subclass" in errors[f"mining.agents[{n + 1}].name"][0]
    assert "name = 'misnamed'" in errors[f"mining.agents[{n + 2}].name"][1]


def test_discovery_is_lazy_and_the_cli_reports_a_broken_plugin_without_a_traceback(tmp_path):
    fake_package(tmp_path / "site", "broken-pkg", {"serm.annotation_agents": {"broken_judge": "broken_judge_mod:J"}},
                 {"broken_judge_mod": "raise SyntaxError('bad\\nplugin')\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    lazy = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        import serm.annotation, serm.cli, serm.mining, serm.policy, monitoring.drift
        from serm.plugins import entry_points
        assert entry_points.cache_info().currsize == 0, "entry points read at import"
        assert "broken_judge_mod" not in sys.modules
        """)], env=env, capture_output=True, text=True, timeout=120)
    assert lazy.returncode == 0, lazy.stderr
    cli = [sys.executable, "-m", "serm.cli"]
    helped = subprocess.run([*cli, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "Traceback" not in helped.stderr
    raw = default_raw()
    raw["annotation"]["agents"].append({"name": "broken_judge"})
    import yaml

    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([*cli, "policy", "validate", str(tmp_path / "p.yaml")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr and res.stderr.startswith("error: ")
    assert "the annotation agent 'broken_judge' failed to load: SyntaxError: bad plugin" in res.stderr
    assert "package broken-pkg 0.1" in res.stderr and "fix:" in res.stderr


# --------------------------------------------------------------------------- drift detectors
def _frames(rng, n: int, digits: bool, score: float) -> pd.DataFrame:
    from monitoring.descriptors import query_frame, vocabulary

    words = [f"w{i}" for i in range(50)]
    queries = [" ".join(rng.choice(words, 4)) + (f" {rng.integers(100, 999)}" if digits else "") for _ in range(n)]
    frame = pd.DataFrame({"query_id": [f"q{i}" for i in range(n)], "query": queries, "locale": "en",
                          "score": rng.normal(score, 0.2, n), "ctr": rng.uniform(0, 1, n),
                          "mean_click_position": rng.uniform(0, 4, n)})
    return query_frame(frame, vocabulary(words))


def test_plugin_detectors_run_in_the_evidently_report_or_measure_themselves(site, tmp_path, on_path):
    """Known answer: the batch's queries end in numbers (digit_share moves) and its scores are a
    grade higher; a fake two-column plugin is judged by its share of drifted columns."""
    from monitoring.drift import format_verdicts, run_drift

    fake_package(tmp_path / "fake", "multi-pkg", {"serm.drift_detectors": {"click_pair": "multi_mod:ClickPair"}},
                 {"multi_mod": """
                     from serm.plugins import DriftDetector

                     class ClickPair(DriftDetector):
                         name = "click_pair"
                         columns = ("ctr", "mean_click_position")
                     """})
    on_path(site, tmp_path / "fake")
    rng = np.random.default_rng(3)
    ref, cur = _frames(rng, 150, False, 1.5), _frames(rng, 150, True, 2.5)
    spec = DriftSpec(detectors=[{"type": "locale_mix"}, {"type": "query_digits"}, {"type": "mean_score_shift"},
                                {"type": "click_pair"}])
    res = run_drift(ref, cur, spec, tmp_path / "out")
    got = {d.type: d for d in res.detectors}
    assert list(got) == ["locale_mix", "query_digits", "mean_score_shift", "click_pair"]
    digits = got["query_digits"]
    assert digits.drifted and digits.value < 1e-6 and digits.threshold == 0.05 and digits.comparison == "<"
    assert digits.details["columns"]["digit_share"]["method"] == "ks"
    shift = got["mean_score_shift"]
    assert shift.drifted and shift.value == pytest.approx(1.0, abs=0.1) and shift.comparison == ">="
    assert shift.details["method"] == "plugin" and "serm-plugin-example 0.1.0" in shift.details["plugin"]
    pair = got["click_pair"]
    assert not pair.drifted and pair.details["columns_judged"] == 2 and pair.details["value_is"] == "share of drifted columns"
    assert not got["locale_mix"].drifted
    saved = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert "digit_share" in saved["columns"] and saved["detectors"][2]["value"] == pytest.approx(shift.value)
    table = format_verdicts(res)
    assert "query_digits" in table and "digit_share" not in table.split("query_digits")[0]
    assert "mean_score_shift" in table and "    ctr " in table


# --------------------------------------------------------------------------- a round
def test_a_round_runs_the_plugins_under_kfp_local(site, tmp_path_factory, monkeypatch):
    """`serm evolve` with the plugin agents and detectors: kfp.local runs mine and annotate as
    subprocesses, which find the plugins through PYTHONPATH like the CLI does."""
    ws = initialised_copy(tmp_path_factory, "plugins")
    policy = write_policy(tmp_path_factory.mktemp("plugin-policy") / "plugins.yaml",
                          drift={"detectors": [{"type": "locale_mix", "threshold": 0.1}, {"type": "query_digits"},
                                               {"type": "mean_score_shift"}]},
                          mining={"agents": [{"name": "long_queries", "min_words": 8},
                                             {"name": "user_feedback", "min_clicks": 1, "max_score": 1.5}],
                                  "prefilter": {"agents": ["long_queries", "user_feedback"], "explore_share": 0.0},
                                  "combine": {"per_agent_quota": {"long_queries": 0.5}}},
                          annotation={"agents": [{"name": "word_overlap"},
                                                 {"name": "lexical", "samples": 1, "thresholds": [0.5, 0.7, 0.9]},
                                                 {"name": "click_evidence", "thresholds": [0.3, 0.3, 0.3]}],
                                      "human": {"budget": 0}})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    out = serm(ws, "evolve", "--policy", str(policy)).stdout
    assert "kfp.local run finished" in out and "query_digits" in out and "mean_score_shift" in out
    rdir = ws / "data" / "rounds" / "r0001"
    votes = pd.read_parquet(rdir / "votes.parquet")
    assert (votes.agent == "word_overlap").sum() > 0
    assert votes[votes.agent == "word_overlap"].rationale.str.contains("of the query words").all()
    candidates = pd.read_parquet(rdir / "candidates.parquet")
    assert candidates.agents.str.contains("long_queries").any()
    assert json.loads((rdir / "mining_report.json").read_text())["per_agent"]["long_queries"] > 0
    manifest = json.loads((rdir / "manifest.json").read_text())
    drift = {d["type"]: d for d in manifest["stages"]["drift"]["result"]["detectors"]}
    assert drift["mean_score_shift"]["value"] is not None and drift["mean_score_shift"]["details"]["method"] == "plugin"
    assert "digit_share" in drift["query_digits"]["details"]["columns"]
    assert {stage: s["status"] for stage, s in manifest["stages"].items()} == dict.fromkeys(
        ["annotate", "check", "drift", "evaluate", "ingest", "mine", "promote", "train"], "done")


def test_the_dockerfile_bakes_plugins_in():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ARG SERM_PLUGINS=""' in text
    run = text[text.index('ARG SERM_PLUGINS=""'):]
    assert "pip install -c /tmp/serm-pins.txt $SERM_PLUGINS" in run and "installed_plugins()" in run
    assert text.index('ARG SERM_PLUGINS') > text.index('pip install ".[cpu]"'), "after SERM, so its pins constrain them"
