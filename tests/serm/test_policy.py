import copy
import subprocess
import sys

import pytest
import yaml

from serm.errors import PolicyError
from serm.policy import load_policy, parse_policy

from tests.conftest import ROOT


def test_default_policy_is_valid():
    p = load_policy(ROOT / "policies" / "default.yaml")
    assert p.name == "default"
    assert [a.name for a in p.mining.agents] == ["user_feedback", "click_model", "uncertainty", "disagreement", "novelty"]
    assert len(p.hash()) == 12


def errors_of(raw):
    with pytest.raises(PolicyError) as exc:
        parse_policy(raw, "test.yaml")
    return exc.value.errors, str(exc.value)


def test_every_error_names_its_field(default_policy_raw):
    raw = copy.deepcopy(default_policy_raw)
    raw["mining"]["budget"] = -3
    raw["training"]["lr"] = "fast"
    raw["mining"]["agents"][1]["measure"] = "vibes"
    del raw["annotation"]
    raw["drift"]["trigger"]["mode"] = "sometimes"
    errs, text = errors_of(raw)
    fields = {f for f, _, _ in errs}
    assert "mining.budget" in fields
    assert "training.lr" in fields
    assert "annotation" in fields
    assert "drift.trigger.mode" in fields
    assert "mining.agents[1].measure" in fields
    assert all(h for _, _, h in errs), "every error carries a fix"
    assert "fix:" in text


def test_unknown_agent_lists_valid_names(default_policy_raw):
    raw = copy.deepcopy(default_policy_raw)
    raw["mining"]["agents"].append({"name": "oracle"})
    errs, _ = errors_of(raw)
    msg = " ".join(m for _, m, _ in errs)
    assert "unknown mining agent 'oracle'" in msg and "uncertainty" in msg and "user_feedback" in msg


def test_unknown_agent_parameter_lists_valid_ones(default_policy_raw):
    raw = copy.deepcopy(default_policy_raw)
    raw["annotation"]["agents"][0]["temperature"] = 0.3
    errs, _ = errors_of(raw)
    msg = " ".join(m for _, m, _ in errs)
    assert "temperature" in msg and "samples" in msg and "thresholds" in msg


def test_unknown_top_level_field(default_policy_raw):
    raw = dict(default_policy_raw, trainnig={"epochs": 3})
    errs, _ = errors_of(raw)
    assert ("trainnig", ) == tuple(f for f, _, _ in errs if f == "trainnig")


def test_inter_min_agents_needs_enough_agents(default_policy_raw):
    raw = copy.deepcopy(default_policy_raw)
    raw["annotation"]["agreement"]["inter_min_agents"] = 5
    _, text = errors_of(raw)
    assert "inter_min_agents" in text


def test_bad_yaml_names_the_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("name: x\nmining: {budget: 3\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(f)
    assert "line" in str(exc.value)


def test_cli_validate(tmp_path, default_policy_raw):
    serm = [sys.executable, "-m", "serm.cli"]
    ok = subprocess.run([*serm, "policy", "validate", str(ROOT / "policies" / "default.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
    bad = copy.deepcopy(default_policy_raw)
    bad["promotion"]["metric"] = "mrr"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    res = subprocess.run([*serm, "policy", "validate", str(f)], capture_output=True, text=True)
    assert res.returncode != 0
    assert "promotion.metric" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr
