"""The escalation queue: export for reviewers in three formats, import their grades back, all or
nothing; `serm escalations import` in a real workspace (git + DVC) commits a new data version."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from serm import versioning
from serm.annotation import escalations
from serm.errors import DataError
from serm.versioning import tree_checksum
from serm.files import write_parquet
from serm.workspace import Workspace

QUEUE = pd.DataFrame({
    "query_id": ["en:q1", "en:q2", "en:q3"], "doc_id": ["en:d1", "en:d2", "en:d3"], "locale": "en", "round": 1,
    "query": ["who wrote it", "when was it", "where is it"], "doc_title": ["A", "B", ""],
    "doc_text": ["text one", "text two", "text three"], "why": "grades spread 3 > 1",
    "agents": ["lexical=0,embedding=3"] * 3, "escalated_at": "2026-12-01T00:00:00+00:00"})


def test_csv_round_trip_leaves_blank_rows_open(tmp_path):
    out = escalations.export(QUEUE, "csv", tmp_path / "q.csv")[0]
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.query_id) == list(QUEUE.query_id) and (df.grade == "").all()
    df.loc[0, "grade"], df.loc[2, "grade"] = "3", "0"
    df["reviewer"] = "ana"
    df.to_csv(out, index=False)
    got, still_open = escalations.parse_resolutions(out, QUEUE)
    assert got[["query_id", "grade", "reviewer"]].values.tolist() == [["en:q1", 3, "ana"], ["en:q3", 0, "ana"]]
    assert still_open == 1


def test_labelstudio_export_and_its_json_export(tmp_path):
    tasks_file, config = escalations.export(QUEUE, "labelstudio", tmp_path / "ls.json")
    assert '<Choices name="grade"' in config.read_text() and 'value="3"' in config.read_text()
    tasks = json.loads(tasks_file.read_text())
    assert tasks[1]["data"]["passage"] == "B: text two"
    # What Label Studio exports after review: the latest non-cancelled annotation counts.
    tasks[0]["annotations"] = [
        {"result": [{"from_name": "grade", "to_name": "passage", "type": "choices", "value": {"choices": ["1"]}}],
         "was_cancelled": False, "completed_by": {"id": 1, "email": "ana@example.org"}},
        {"result": [{"from_name": "grade", "to_name": "passage", "type": "choices", "value": {"choices": ["2"]}}],
         "was_cancelled": False, "completed_by": {"id": 2, "email": "bo@example.org"}}]
    tasks[1]["annotations"] = [{"result": [{"from_name": "grade", "type": "choices", "value": {"choices": ["3"]}}],
                                "was_cancelled": True}]
    tasks_file.write_text(json.dumps(tasks))
    got, still_open = escalations.parse_resolutions(tasks_file, QUEUE)
    assert got[["query_id", "grade", "reviewer"]].values.tolist() == [["en:q1", 2, "bo@example.org"]]
    assert still_open == 2


def test_argilla_records_nested_and_flattened(tmp_path):
    records_file, settings = escalations.export(QUEUE, "argilla", tmp_path / "ar.json")
    assert json.loads(settings.read_text())["questions"][0] == {"name": "grade", "type": "rating",
                                                                "values": [0, 1, 2, 3], "required": True}
    recs = json.loads(records_file.read_text())
    recs[0]["responses"] = {"grade": [{"value": 3, "user_id": "u1", "status": "submitted"},
                                      {"value": 3, "user_id": "u2", "status": "submitted"}]}
    recs[1]["responses"] = {"grade": [{"value": 1, "user_id": "u1", "status": "submitted"},
                                      {"value": 2, "user_id": "u2", "status": "submitted"}]}   # disagree: open
    flat = {"id": recs[2]["id"], "query": "where is it", "grade.responses": [0],
            "grade.responses.users": ["u3"], "grade.responses.status": ["submitted"]}
    records_file.write_text(json.dumps([recs[0], recs[1], flat]))
    got, still_open = escalations.parse_resolutions(records_file, QUEUE)
    assert got[["query_id", "grade", "reviewer"]].values.tolist() == [["en:q1", 3, "u1,u2"], ["en:q3", 0, "u3"]]
    assert still_open == 1


@pytest.mark.parametrize("grade, message", [("5", "not 0, 1, 2 or 3"), ("high", "not 0, 1, 2 or 3"),
                                            ("2.5", "not 0, 1, 2 or 3")])
def test_a_bad_grade_refuses_the_whole_file(tmp_path, grade, message):
    f = tmp_path / "r.csv"
    pd.DataFrame({"query_id": ["en:q1", "en:q2"], "doc_id": ["en:d1", "en:d2"], "grade": ["3", grade]}).to_csv(f, index=False)
    with pytest.raises(DataError, match=message) as exc:
        escalations.parse_resolutions(f, QUEUE)
    assert "line 3" in str(exc.value) and "nothing imported" in str(exc.value)


def test_unknown_pairs_and_unknown_files_are_refused(tmp_path):
    f = tmp_path / "r.csv"
    pd.DataFrame({"query_id": ["en:zz"], "doc_id": ["en:d1"], "grade": ["3"]}).to_csv(f, index=False)
    with pytest.raises(DataError, match="not in the escalation queue"):
        escalations.parse_resolutions(f, QUEUE)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        escalations.parse_resolutions(tmp_path / "x.json", QUEUE)
    pd.DataFrame({"query_id": ["en:q1"], "grade": ["3"]}).to_csv(tmp_path / "nodoc.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        escalations.parse_resolutions(tmp_path / "nodoc.csv", QUEUE)


def serm(ws, *args):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", "serm.cli", *args, "--workspace", str(ws)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_import_commits_a_data_version_and_refuses_bad_files_unchanged(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    versioning.init_repo(ws, ".dvc-remote")
    write_parquet(QUEUE, escalations.queue_path(ws.data))
    versioning.git(ws, "add", "-A")
    versioning.git(ws, "commit", "-q", "-m", "workspace")
    versioning.commit_version(ws, "queue")
    head = versioning.git(ws, "rev-parse", "HEAD")

    out = tmp_path / "review.csv"
    res = serm(ws.root, "escalations", "export", "--format", "csv", "--out", str(out))
    assert res.returncode == 0 and "3 open escalation(s)" in res.stdout, res.stderr
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    df.loc[1, "grade"] = "9"
    df.to_csv(out, index=False)
    before = tree_checksum(ws.data)
    res = serm(ws.root, "escalations", "import", str(out))
    assert res.returncode != 0 and "grade '9'" in res.stderr and "Traceback" not in res.stderr
    assert tree_checksum(ws.data) == before and versioning.git(ws, "rev-parse", "HEAD") == head

    df.loc[1, "grade"] = "2"
    df.to_csv(out, index=False)
    res = serm(ws.root, "escalations", "import", str(out))
    assert res.returncode == 0, res.stderr
    assert "imported 1 grade(s)" in res.stdout and "2 escalation(s) still open" in res.stdout
    assert versioning.git(ws, "rev-parse", "HEAD^") == head, "one new commit"
    assert versioning.clean(ws), "data/ matches the committed data.dvc"
    resolved = escalations.read_resolved(ws.data)
    assert resolved[["query_id", "grade", "source"]].values.tolist() == [["en:q2", 2, "review.csv"]]
    assert resolved["trained_round"].isna().all(), "trained by the next round, not yet"
    assert list(escalations.read_queue(ws.data).query_id) == ["en:q1", "en:q3"]
    listing = serm(ws.root, "escalations", "list").stdout
    assert "2 escalation(s) open, 1 resolved (1 not trained on yet)" in listing
    listed = json.loads(serm(ws.root, "escalations", "list", "--json", "--show", "1").stdout)
    assert (listed["open"], listed["resolved"], listed["resolved_not_trained"]) == (2, 1, 1)
    assert [i["query_id"] for i in listed["items"]] == ["en:q1"] and sum(listed["open_by_round"].values()) == 2


def test_an_emptied_queue_still_exports_and_imports_cleanly(tmp_path):
    data = tmp_path / "data"
    write_parquet(QUEUE.iloc[:1], escalations.queue_path(data))
    f = tmp_path / "r.csv"
    pd.DataFrame({"query_id": ["en:q1"], "doc_id": ["en:d1"], "grade": ["2"]}).to_csv(f, index=False)
    got, _ = escalations.parse_resolutions(f, escalations.read_queue(data))
    assert escalations.apply_resolutions(data, got, "r.csv") == {"resolved": 1, "test_labels": 0, "queue_left": 0}
    empty = escalations.read_queue(data)
    assert len(empty) == 0 and list(empty.columns) == escalations.QUEUE_COLUMNS
    out = escalations.export(empty, "csv", tmp_path / "q.csv")[0]
    assert pd.read_csv(out).columns.tolist() == [*escalations.QUEUE_COLUMNS, "grade"]
    with pytest.raises(DataError, match="not in the escalation queue"):
        escalations.parse_resolutions(f, empty)
