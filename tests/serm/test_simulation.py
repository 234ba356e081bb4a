"""The simulated source over a user's own judgments file (`data.source: simulated` with
`data.judgments`): queries grouped by locale, by a column or by file order; the seed group
trains v0, each stream group arrives in batches, held-out queries of every group are its test
and never reach a batch; and a real round runs on it."""

import pandas as pd
import pytest
import yaml

from serm import simulation
from serm.errors import DataError
from serm.policy import load_policy

from tests.conftest import ROOT
from tests.files_workspaces import SAMPLE


@pytest.fixture(scope="module")
def judgments(tmp_path_factory):
    """The Cranfield sample's seed and static-test judgments (110 queries) with their text, a
    `topic` column (two values) and two made-up locales, as one CSV."""
    docs = pd.read_parquet(SAMPLE / "documents.parquet").set_index("doc_id")
    j = pd.concat([pd.read_csv(SAMPLE / "seed.csv", keep_default_na=False),
                   pd.read_json(SAMPLE / "static_test.jsonl", lines=True, dtype={"doc_text": str})],
                  ignore_index=True)
    j["doc_text"] = j["doc_id"].map(docs["text"]).fillna("")
    order = {q: i for i, q in enumerate(dict.fromkeys(j.query_id))}
    j["topic"] = ["early" if order[q] < 55 else "late" for q in j.query_id]
    j["locale"] = ["en" if order[q] % 2 == 0 else "fr" for q in j.query_id]
    path = tmp_path_factory.mktemp("judgments") / "judgments.csv"
    j.to_csv(path, index=False)
    return path


def policy_for(tmp_path, judgments, **data):
    raw = yaml.safe_load((ROOT / "tests" / "policies" / "tiny.yaml").read_text())
    raw["data"] = {"source": "simulated", "judgments": str(judgments), "queries_per_batch": 10,
                   "seed_queries": 20, "test_queries": 5, **data}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    simulation._WORLDS.clear()
    return path


@pytest.mark.parametrize("shift, extra, seed_group, stream", [
    ("column", {"shift_column": "topic", "seed_locale": "early", "stream_locales": ["late"]}, "early", ["late"]),
    ("locale", {"seed_locale": "en", "stream_locales": ["fr"]}, "en", ["fr"]),
    ("order", {}, "seed", ["stream"]),
])
def test_groups_seed_tests_and_batches(tmp_path, judgments, shift, extra, seed_group, stream):
    w = simulation.world(load_policy(policy_for(tmp_path, judgments, shift=shift, **extra)))
    raw = pd.read_csv(judgments, keep_default_na=False)
    tests = w.test_sets()
    assert set(tests.group) == {seed_group, *stream}
    assert (tests.groupby("group").query_id.nunique() == 5).all(), "test_queries held out in every group"
    seed = w.seed_set()
    assert seed.query_id.nunique() == 20 and not set(seed.query_id) & set(tests.query_id)
    if shift == "column":
        assert set(raw[raw.query_id.isin(seed.query_id)].topic) == {"early"}
    if shift == "order":
        first = list(dict.fromkeys(raw.query_id))[:25]   # seed_queries + test_queries: the file's head
        assert set(seed.query_id) <= set(first)
    seen = set()
    b = 1
    while (batch := w.batch_candidates(b)) is not None:
        assert batch.query_id.nunique() <= 10
        assert not set(batch.query_id) & (set(tests.query_id) | set(seed.query_id) | seen)
        seen |= set(batch.query_id)
        b += 1
    assert b > 1
    if shift == "column":   # the late topic: 55 queries, 5 of them held out as its test
        assert len(seen) == 50
    pair = raw.iloc[0]
    assert w.grade(pair.query_id, pair.doc_id) == pair.grade and w.grade(pair.query_id, "nowhere") == 0


def test_a_missing_shift_column_names_the_field(tmp_path, judgments):
    policy = load_policy(policy_for(tmp_path, judgments, shift="column", shift_column="category", seed_locale="a",
                                    stream_locales=["b"]))
    with pytest.raises(DataError, match=r"data.shift_column: .* has no column 'category'; its columns: query_id"):
        simulation.world(policy)


def test_a_group_too_small_for_its_test_names_it(tmp_path, judgments):
    policy = load_policy(policy_for(tmp_path, judgments, shift="locale", seed_locale="en", stream_locales=["de"]))
    with pytest.raises(DataError, match=r"data.seed_locale / data.stream_locales: group 'de' has 0 queries .*\(groups found: en, fr\)"):
        simulation.world(policy)


def test_a_round_runs_on_a_simulated_judgments_file(tmp_path, judgments):
    from serm.evolve import evolve
    from serm.schema import RoundManifest
    from serm.workspace import Workspace

    path = policy_for(tmp_path, judgments, shift="column", shift_column="topic", seed_locale="early",
                      stream_locales=["late"])
    ws = tmp_path / "ws"
    lines = []
    (outcome,) = evolve(ws, path, force=True, log=lines.append)
    assert outcome["round"] == 1 and outcome["batch"] == 1 and outcome["evolved"]
    m = RoundManifest.load(Workspace.at(ws).layout.round(1).committed_manifest)
    assert m.stages["train"].status == "done"
    log = "\n".join(lines)
    assert "[mine]" in log and "[annotate]" in log and "Round 1 summary" in log
