"""Two real rounds from a team's own files (a Cranfield subset, not XQuAD) through the CLI:
`serm init` on a documents file, seed and static-test judgments; `serm ingest` of a day of
logs; `serm evolve` (kfp.local; round 2 `--in-process`); reviewers answer the round's test requests and escalations
(`serm escalations export/import`); the next day; `serm evolve` again.

Nothing is hidden in a `files` workspace: round 1 has no evolving test yet, so it must not
promote; the reviewed test requests become round 2's evolving test set."""

import json

import pandas as pd
import pytest

from serm import schema
from serm.annotation import escalations
from serm.workspace import Workspace

from tests.files_workspaces import make_files_data
from tests.reliability_workspaces import serm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("ws")
    serm(root, "init", "--policy", str(files["policy"]))
    return root


def manifest(ws, round_no):
    return schema.RoundManifest.load(Workspace.at(ws).layout.round(round_no).committed_manifest)


def test_init_reads_the_teams_files(ws, files):
    lay = Workspace.at(ws).layout
    docs = pd.read_parquet(lay.documents)
    assert len(docs) == len(pd.read_parquet(files["documents"])) and {"author", "biblio"} <= set(docs.columns)
    assert Workspace.at(ws).state()["source"] == "files"
    assert Workspace.at(ws).state()["production"] == 0
    res = serm(ws, "evolve", "--policy", str(files["policy"]))
    assert "no ingested batch is waiting: nothing to do" in res.stdout
    assert Workspace.at(ws).state()["rounds_done"] == 0


def test_round_one_from_an_ingested_day(ws, files):
    res = serm(ws, "ingest", str(files["events"][0]), "--policy", str(files["policy"]))
    assert "1 file(s) ingested" in res.stdout and "1 batch(es) waiting for `serm evolve` (1)" in res.stdout
    assert "files: 1 file(s) ingested, 1 batch(es) waiting (1;" in serm(ws, "status").stdout
    status = json.loads(serm(ws, "status", "--json").stdout)
    assert (status["source"], status["batches_waiting"], status["production"], status["in_progress"]) == \
        ("files", [1], 0, [])
    res = serm(ws, "evolve", "--policy", str(files["policy"]))
    out = res.stdout
    for needle in ("[ingest]", "[drift]", "[mine]", "[annotate]", "[check]", "[evaluate]", "Round 1 summary",
                   "kfp.local run finished"):
        assert needle in out, needle
    m = manifest(ws, 1)
    assert m.batch == 1 and not m.promoted
    assert "evolving" in m.reason and "< min_test_queries" in m.reason, m.reason
    assert "- (en)" in serm(ws, "versions").stdout, "no evolving test yet: no value, not None"
    queue = escalations.read_queue(ws / "data")
    tests = queue[queue.purpose == schema.TEST]
    assert tests.query_id.nunique() >= 2, "round 1 asked reviewers to label whole test queries"
    assert len(tests) + (queue.purpose == schema.TRAIN).sum() <= 40, "the human budget bounds what is asked"
    # a test query is never mined, so never labelled for training
    labels = pd.read_parquet(Workspace.at(ws).layout.round(1).committed / schema.LABELS.name)
    assert len(labels) and not set(labels.query_id) & set(tests.query_id)


def test_reviewers_answer_between_rounds(ws, files, tmp_path):
    out = tmp_path / "review.csv"
    serm(ws, "escalations", "export", "--format", "csv", "--out", str(out))
    review = pd.read_csv(out, dtype=str, keep_default_na=False)
    answers = pd.read_csv(files["answers"], dtype=str)
    grade = dict(zip(zip(answers.query_id, answers.doc_id), answers.grade))
    review["grade"] = [grade.get((q, d), "0") for q, d in zip(review.query_id, review.doc_id)]
    review.to_csv(out, index=False)
    queue = escalations.read_queue(ws / "data")
    n_tests = int((queue.purpose == schema.TEST).sum())
    res = serm(ws, "escalations", "import", str(out))
    assert f"{n_tests} test label(s)" in res.stdout, res.stdout
    labels = pd.read_parquet(Workspace.at(ws).layout.evolving_tests)
    assert len(labels) == n_tests and set(labels.grade) <= {0, 1, 2, 3}
    assert len(escalations.read_queue(ws / "data")) == 0


def test_round_two_evaluates_on_the_reviewed_test_labels(ws, files):
    serm(ws, "ingest", str(files["events"][1]), "--policy", str(files["policy"]))
    res = serm(ws, "evolve", "--policy", str(files["policy"]), "--in-process")   # round 1 ran under kfp.local
    assert "Round 2 summary" in res.stdout and "in this process" in res.stdout
    m = manifest(ws, 2)
    assert m.batch == 2
    metrics = json.loads((Workspace.at(ws).layout.round(2).committed / schema.METRICS.name).read_text())
    evolving = metrics["candidate"]["evolving"]
    labels = pd.read_parquet(Workspace.at(ws).layout.evolving_tests)
    assert evolving["pairs"] == len(labels) and evolving["queries"] >= 2, evolving
    assert m.promoted, m.reason   # min_gain -1: any candidate evaluated on enough queries is promoted
    state = Workspace.at(ws).state()
    assert state["production"] == 1 and state["rounds_done"] == 2 and state["next_batch"] == 3
    res = serm(ws, "evolve", "--policy", str(files["policy"]))
    assert "nothing to do" in res.stdout
