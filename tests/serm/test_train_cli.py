"""`serm train` on a small real judgments file: a loadable model directory with metrics and
lineage, a validation split by whole queries, policy defaults with validated overrides."""

import hashlib
import json

import pandas as pd
import pytest

from serm.cli import main
from serm.data.judgments import load_judgments
from serm.data.xquad import candidate_lists, load_paragraphs, load_questions
from serm.evaluation import evaluate
from serm.model.cross_encoder import RelevanceModel
from serm.model.fit import sample_queries, split_queries
from serm.policy import ModelSpec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 pairs: 8 English questions with their paragraph and 4 negatives each."""
    q = load_questions()
    df = candidate_lists(q[q.locale == "en"].head(8), load_paragraphs(), 2, 2, seed=5).drop(columns="question_id")
    f = tmp_path_factory.mktemp("data") / "small.csv"
    df.to_csv(f, index=False)
    return f


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "m"
    rc = main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--max-length", "48",
               "--val-share", "0.25", "--seed", "3", "--batch-size", "8"])
    assert rc == 0
    return out


def test_train_saves_a_loadable_model_with_metrics_and_lineage(trained, data):
    for name in ("config.json", "serm_model.json", "metrics.json", "lineage.json"):
        assert (trained / name).is_file(), name
    spec = ModelSpec.model_validate(json.loads((trained / "serm_model.json").read_text()))
    assert spec.max_length == 48 and spec.base_model == "builtin:minilm-l6"
    lineage = json.loads((trained / "lineage.json").read_text())
    assert lineage["trained_on"] == {"pairs": 30, "queries": 6}
    assert lineage["validation"] == {"pairs": 10, "queries": 2, "share": 0.25}
    assert lineage["dataset"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert lineage["base_model"] == "builtin:minilm-l6" and lineage["seed"] == 3 and lineage["policy"] == "default"
    assert lineage["training"]["epochs_run"] == 2 and len(lineage["training"]["val_loss"]) == 2
    assert lineage["training_spec"]["batch_size"] == 8 and lineage["training_spec"]["validation_share"] == 0.25

    # metrics.json holds the saved model's scores on exactly the held-out validation queries
    _, val = split_queries(load_judgments(data), 0.25, 3)
    model = RelevanceModel.load(trained, spec, device="cpu")
    again = evaluate(model, val)
    metrics = json.loads((trained / "metrics.json").read_text())["validation"]
    assert {k: metrics[k] for k in again["overall"]} == again["overall"]
    assert metrics["queries"] == 2 and metrics["per_locale"].keys() == {"en"}


def test_training_changes_the_model(trained, data):
    """The saved weights are not the starting head: same seed, same untrained head, other scores."""
    from serm.model.training import set_seed

    df = load_judgments(data)
    spec = ModelSpec(max_length=48)
    set_seed(3)
    start = RelevanceModel.load("builtin:minilm-l6", spec, device="cpu")
    after = RelevanceModel.load(trained, spec, device="cpu")
    args = (df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist())
    assert abs(start.score(*args) - after.score(*args)).max() > 1e-3


def test_validation_split_is_by_whole_query_and_deterministic():
    df = pd.DataFrame({"query_id": [f"q{i // 3}" for i in range(30)], "grade": 0})
    tr, val = split_queries(df, 0.2, seed=1)
    assert set(tr.query_id).isdisjoint(val.query_id) and len(tr) + len(val) == 30
    assert val.query_id.nunique() == 2 and val.groupby("query_id").size().eq(3).all()
    assert split_queries(df, 0.2, seed=1)[1].equals(val)
    assert len(split_queries(df, 0.0, seed=1)[1]) == 0
    assert split_queries(df.head(3), 0.5, seed=1)[1].empty  # a single query stays on the training side
    assert split_queries(df.head(6), 0.01, seed=1)[1].query_id.nunique() == 1  # at least one when asked


def test_max_pairs_keeps_whole_queries():
    df = pd.DataFrame({"query_id": [f"q{i}" for i in range(10) for _ in range(i % 4 + 1)], "grade": 0})
    picked = sample_queries(df, 9, seed=4)
    assert len(picked) <= 9
    sizes = df.groupby("query_id").size()
    assert (picked.groupby("query_id").size() == sizes[picked.query_id.unique()]).all()
    assert sample_queries(df, None, seed=4) is df and len(sample_queries(df, 1, seed=4)) >= 1


def test_continue_from_a_saved_model_keeps_its_spec(trained, data, tmp_path, capsys):
    out = tmp_path / "m2"
    rc = main(["train", "-d", str(data), "--base", str(trained), "-o", str(out), "--epochs", "1",
               "--val-share", "0", "--max-pairs", "20"])
    assert rc == 0, capsys.readouterr().err
    assert "no validation queries" in capsys.readouterr().out
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["parent"] == str(trained) and lineage["trained_on"]["pairs"] <= 20
    assert json.loads((out / "serm_model.json").read_text())["max_length"] == 48  # from the base, not the policy
    assert json.loads((out / "metrics.json").read_text()) == {"validation": None}


@pytest.mark.parametrize("argv, expected", [
    (["--epochs", "0"], "--epochs 0: Input should be greater than or equal to 1"),
    (["--val-share", "0.7"], "--val-share 0.7: Input should be less than 0.5"),
    (["--base", "v2"], "has no model versions"),
])
def test_bad_options_are_named(data, tmp_path, capsys, argv, expected):
    rc = main(["train", "-d", str(data), "-o", str(tmp_path / "x"), "-w", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_an_existing_output_is_not_overwritten_silently(data, tmp_path, capsys):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    rc = main(["train", "-d", str(data), "-o", str(keep), "--epochs", "1"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    rc = main(["train", "-d", str(data), "-o", str(keep), "--epochs", "1", "--overwrite"])
    assert rc == 2 and "not a saved model directory" in capsys.readouterr().err
    assert (keep / "todo.txt").read_text() == "mine"
