"""Secrets come only from the environment and never reach an output.

The policy refuses a credential written into it (`api_key: ...` -> use `api_key_env: NAME`) without
echoing the value. With a key planted in the environment, commands leave it out of their output and
of every file they write. `assert_no_secret` is the check; the full-round version is slow (`-m slow`).
"""

import copy
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from serm.errors import PolicyError
from serm.policy import load_policy, parse_policy

from tests.conftest import ROOT

SECRET = "sk-test-PLANTED-123"
ENV_NAME = "SERM_TEST_API_KEY"
TINY = ROOT / "tests" / "policies" / "tiny.yaml"


def _readable_forms(path: Path, data: bytes) -> list[bytes]:
    """The file's bytes, plus what a byte search would miss: Parquet cells (pages are compressed)
    and git loose objects (zlib)."""
    forms = [data]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            forms.append(pq.read_table(path).to_pandas().to_csv().encode("utf-8", "backslashreplace"))
        except Exception as exc:   # an unreadable Parquet file is reported, not skipped
            raise AssertionError(f"{path}: cannot read Parquet to search it: {exc}") from None
    elif ".git" in path.parts and "objects" in path.parts:
        try:
            forms.append(zlib.decompress(data))
        except zlib.error:
            pass                    # pack files: covered by `git grep` over every revision
    return forms


def assert_no_secret(paths, secret: str, texts=()) -> int:
    """Fail if `secret` appears in any of `texts` or in any file under `paths` (recursively, binary
    files included). Returns the number of files searched, so a caller can tell it searched something."""
    needle = secret.encode("utf-8")
    for i, text in enumerate(texts):
        assert secret not in text, f"the secret appears in output #{i}"
    hits, searched = [], 0
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for f in files:
            searched += 1
            if any(needle in form for form in _readable_forms(f, f.read_bytes())):
                hits.append(str(f))
    assert not hits, f"the secret was written to {len(hits)} file(s): {hits[:10]}"
    return searched


def planted_env() -> dict[str, str]:
    return {**os.environ, ENV_NAME: SECRET, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def serm(*args, cwd=None, timeout=600):
    exe = ROOT / ".venv" / "bin" / "serm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "serm.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=planted_env(), cwd=cwd, timeout=timeout)


# --------------------------------------------------------------------------- the policy
@pytest.mark.parametrize("where, key, field", [
    ((), "api_key", "api_key"),
    (("annotation", "agents", 0), "api_key", "annotation.agents[0].api_key"),
    (("mining", "agents", 1), "token", "mining.agents[1].token"),
    (("drift",), "password", "drift.password"),
    ((), "llm", "llm.OPENAI_API_KEY"),
])
def test_policy_refuses_a_literal_key(default_policy_raw, where, key, field):
    raw = copy.deepcopy(default_policy_raw)
    target = raw
    for part in where:
        target = target[part]
    target[key] = {"OPENAI_API_KEY": SECRET, "model": "x"} if key == "llm" else SECRET
    with pytest.raises(PolicyError) as exc:
        parse_policy(raw, "p.yaml")
    rows = {f: (m, h) for f, m, h in exc.value.errors}
    assert field in rows, rows
    message, hint = rows[field]
    assert "credential" in message and "_env: NAME" in hint
    assert SECRET not in str(exc.value), "the value is never echoed"


def test_naming_the_variable_is_not_a_secret(default_policy_raw):
    """`api_key_env` and token-ish names that hold no credential pass the secret check (they may still
    be unknown fields until an agent declares them)."""
    raw = copy.deepcopy(default_policy_raw)
    raw["annotation"]["agents"][0]["api_key_env"] = ENV_NAME
    raw["annotation"]["agents"][0]["max_tokens"] = 5
    with pytest.raises(PolicyError) as exc:
        parse_policy(raw, "p.yaml")
    assert all("credential" not in m for _, m, _ in exc.value.errors)
    assert {f for f, _, _ in exc.value.errors} == {"annotation.agents[0].api_key_env", "annotation.agents[0].max_tokens"}


def test_key_in_a_policy_file_is_not_echoed(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text((ROOT / "policies" / "default.yaml").read_text() + f"\napi_key: {SECRET}\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(f)
    assert "api_key: a credential" in str(exc.value) and SECRET not in str(exc.value)


# --------------------------------------------------------------------------- commands, key in the env
def test_commands_with_a_planted_key_do_not_leak_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    bad_dir = tmp_path / "input"          # holds the key on purpose: not searched
    bad_dir.mkdir()
    bad = bad_dir / "bad.yaml"
    bad.write_text(f"name: x\napi_key: {SECRET}\nmining: {{budget: -1}}\n")
    ok = serm("policy", "validate", str(ROOT / "policies" / "default.yaml"), cwd=out)
    refused = serm("policy", "validate", str(bad), cwd=out)
    compiled = serm("pipeline", "compile", "--out", str(out / "pipeline.yaml"), cwd=out)
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stderr
    assert refused.returncode != 0 and "api_key_env: NAME" in refused.stderr and "Traceback" not in refused.stderr
    assert compiled.returncode == 0 and (out / "pipeline.yaml").exists(), compiled.stderr
    searched = assert_no_secret([out], SECRET, [r.stdout + r.stderr for r in (ok, refused, compiled)])
    assert searched >= 1


def test_assert_no_secret_finds_a_planted_key(tmp_path):
    """The check itself: plain, Parquet-compressed and nested files are found."""
    import pandas as pd

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "log.txt").write_text("nothing here\n")
    assert assert_no_secret([tmp_path], SECRET) == 1
    pd.DataFrame({"x": [f"prefix {SECRET} suffix" * 50]}).to_parquet(tmp_path / "a" / "t.parquet", compression="gzip")
    with pytest.raises(AssertionError, match="t.parquet"):
        assert_no_secret([tmp_path], SECRET)
    with pytest.raises(AssertionError, match="output #1"):
        assert_no_secret([], SECRET, ["fine", f"key={SECRET}"])


@pytest.mark.slow
def test_a_full_round_with_a_planted_key_leaks_nothing(tmp_path):
    """init + one forced round on the tiny policy plus an `llm_judge` that authenticates with the
    planted key (`api_key_env`) against an OpenAI-compatible peer on 127.0.0.1 that refuses any
    other key, so the key is really used; every file the workspace holds afterwards (manifests,
    reports, logs, votes, Parquet, Feast SQLite, vote cache, DVC cache, git objects and every
    committed revision) and all console output are searched."""
    import pandas as pd
    import yaml

    from serm.annotation.openai_peer import Peer

    ws = tmp_path / "ws"
    ws.mkdir()
    with Peer(rule="overlap", api_key=SECRET) as peer:
        raw = yaml.safe_load(TINY.read_text())
        raw["annotation"]["agents"].append({"name": "llm_judge", "endpoint": peer.url, "model": "peer-judge",
                                            "samples": 2, "api_key_env": ENV_NAME})
        policy = tmp_path / "policy" / "judged.yaml"   # outside the searched workspace; holds no key
        policy.parent.mkdir()
        policy.write_text(yaml.safe_dump(raw, sort_keys=False))
        init = serm("init", "--policy", str(policy), "--workspace", str(ws), timeout=1200)
        assert init.returncode == 0, init.stderr[-3000:]
        evolve = serm("evolve", "--force", "--policy", str(policy), "--workspace", str(ws), timeout=1200)
        assert evolve.returncode == 0, evolve.stdout[-3000:] + evolve.stderr[-3000:]
        chats = peer.chat_requests()
    assert chats, "the judge was asked"
    assert all(c["headers"]["authorization"] == f"Bearer {SECRET}" for c in chats), "the key went only to the header"
    votes = pd.read_parquet(ws / "data" / "rounds" / "r0001" / "votes.parquet")
    assert (votes["agent"] == "llm_judge:peer-judge").any() and votes.loc[
        votes["agent"] == "llm_judge:peer-judge", "grade"].notna().any(), "the judge's votes are in"
    searched = assert_no_secret([ws], SECRET, [init.stdout, init.stderr, evolve.stdout, evolve.stderr])
    revs = subprocess.run(["git", "rev-list", "--all"], cwd=ws, capture_output=True, text=True, check=True).stdout.split()
    grep = subprocess.run(["git", "grep", "-a", "-F", SECRET, *revs], cwd=ws, capture_output=True, text=True)
    assert grep.returncode == 1 and not grep.stdout, grep.stdout[:2000]
    assert searched > 50
