"""`serm ingest` on bad input: each kind of bad file or row gets a clear message or a
quarantine row with its reason, counts reconcile, a file with nothing to ingest is refused
(non-zero exit) and leaves the workspace exactly as it was.

One `files` workspace (tests/policies/tiny-files.yaml on a Cranfield subset) is initialised
for the module; each test ingests its own event ids so the tests do not depend on order."""

import subprocess

import pandas as pd
import pytest

from serm import ingest
from serm.errors import DataError
from serm.policy import load_policy
from serm.versioning import tree_checksum
from serm.workspace import Workspace

from tests.files_workspaces import make_files_data, read_events, write_events
from tests.reliability_workspaces import serm as run_serm


def serm(ws, *args):
    return run_serm(ws, *args, check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files_data(tmp_path_factory.mktemp("data"), stream_queries=4)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("ws")
    res = serm(root, "init", "--policy", str(files["policy"]))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def policy(files):
    return load_policy(files["policy"])


@pytest.fixture
def day(files):
    """A valid day of logs (the first sample day's 4 queries) as a raw frame, doc_id as text."""
    return read_events(files["events"][0])


def fresh(frame, tag):
    """The frame with event ids of its own, so a test's rows are new to the workspace."""
    return frame.assign(event_id=[f"{tag}-{i}" for i in range(len(frame))])


def head(ws):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True, check=True).stdout


def run(ws, policy, *paths, documents=None):
    lines = []
    with Workspace.at(ws).lock():
        result = ingest.ingest(Workspace.at(ws), policy, list(paths), documents, log=lines.append)
    return result, "\n".join(lines)


def quarantine_of(ws, batch):
    return pd.read_parquet(Workspace.at(ws).layout.batch(batch) / "quarantine.parquet")


def assert_untouched(ws, before):
    """`before` = (HEAD, checksum of data/) taken before a refused ingest."""
    assert (head(ws), tree_checksum(ws / "data")) == before


def snapshot(ws):
    return head(ws), tree_checksum(ws / "data")


def test_a_valid_file_is_one_batch_and_one_data_version(ws, policy, day, tmp_path):
    before = head(ws)
    path = write_events(fresh(day, "ok"), tmp_path / "day.parquet")
    result, log = run(ws, policy, path)
    (batch,) = result["batches"]
    assert result["files"][0]["events"] == len(day) and result["files"][0]["quarantined"] == 0
    assert head(ws) != before, "an ingest is a new commit"
    stored = pd.read_parquet(Workspace.at(ws).layout.batch(batch) / "events.parquet")
    assert len(stored) == len(day) and set(stored.event_id) == {f"ok-{i}" for i in range(len(day))}
    assert "[feast]" in log and "[version]" in log


@pytest.mark.parametrize("drop, rename, needle", [
    ("dwell_s", None, "dwell_s"),
    (None, {"query": "qeury"}, "query (found 'qeury': misspelt?)"),
])
def test_missing_or_misspelt_columns_refuse_the_file(ws, policy, day, tmp_path, drop, rename, needle):
    frame = fresh(day, "cols")
    frame = frame.drop(columns=[drop]) if drop else frame.rename(columns=rename)
    path = write_events(frame, tmp_path / "bad.csv")
    before = snapshot(ws)
    with pytest.raises(DataError) as err:
        run(ws, policy, path)
    msg = str(err.value)
    assert needle in msg and "events need event_id, ts, query_id" in msg, msg
    assert_untouched(ws, before)


def test_bad_values_are_quarantined_each_with_its_reason(ws, policy, day, tmp_path):
    frame = fresh(day, "vals").astype(object)
    frame.loc[0, "position"] = "top"             # wrong type
    frame.loc[1, "dwell_s"] = -3                 # out of range
    frame.loc[2, "clicked"] = "maybe"            # not a boolean
    frame.loc[3, "ts"] = "yesterday"             # not a timestamp
    frame.loc[4, "query"] = None                 # null
    frame.loc[5, "doc_id"] = "cran_missing_doc"  # not in the catalogue
    frame.loc[6, "event_id"] = frame.loc[7, "event_id"]  # duplicate event (the first copy is kept)
    path = write_events(frame, tmp_path / "mixed.csv")
    result, log = run(ws, policy, path)
    (info,) = result["files"]
    assert info["rows"] == len(frame) and info["quarantined"] == 7 and info["events"] == len(frame) - 7
    q = quarantine_of(ws, info["batches"][0]).sort_values("row")
    assert list(q.row) == [0, 1, 2, 3, 4, 5, 7]
    assert q.reason.iloc[0].startswith("position: not a whole number in 1..")
    assert list(q.reason)[1:] == [
        "dwell_s: not a finite number >= 0", "clicked: not a boolean (true/false/1/0)",
        "ts: not a timestamp (ISO 8601)", "query: null", "doc_id: unknown document", "event_id: duplicate event"]
    assert "89 events, 7 quarantined (1 position: not a whole number" in log and "and 2 more" in log


def test_invalid_utf8_is_quarantined_not_fatal(ws, policy, day, tmp_path):
    path = tmp_path / "latin1.csv"
    fresh(day, "utf").to_csv(path, index=False)
    lines = path.read_bytes().split(b"\n")
    assert lines[2].startswith(b"utf-1,")
    lines[2] = lines[2].replace(b"utf-1,", b"utf-1\xff\xfe,", 1)   # broken bytes in one row's event_id
    path.write_bytes(b"\n".join(lines))
    result, _ = run(ws, policy, path)
    (info,) = result["files"]
    q = quarantine_of(ws, info["batches"][0])
    assert info["quarantined"] == 1 and int(q.row.iloc[0]) == 1
    assert q.reason.iloc[0] == "event_id: invalid UTF-8 (lone surrogate)"
    assert info["events"] + info["quarantined"] == info["rows"] == len(day)


def test_broken_jsonl_lines_are_rows_in_quarantine(ws, policy, day, tmp_path):
    path = write_events(fresh(day, "json"), tmp_path / "day.jsonl")
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:40]                      # truncated mid-object
    lines.insert(5, "[1, 2, 3]")                  # JSON, but not an object
    path.write_text("\n".join(lines) + "\n")
    result, _ = run(ws, policy, path)
    (info,) = result["files"]
    reasons = sorted(quarantine_of(ws, info["batches"][0]).reason)
    assert info["rows"] == len(day) + 1 and info["quarantined"] == 2
    assert any("not valid JSON" in r for r in reasons) and any("not a JSON object" in r for r in reasons)


@pytest.mark.parametrize("name, content, needle", [
    ("empty.csv", b"", "the file is empty"),
    ("notes.txt", b"event_id,ts\n1,2\n", "unknown format '.txt'"),
    ("broken.parquet", b"this is not parquet at all", "cannot read as parquet"),
    ("header-only.csv", b"event_id,ts,query_id,query,locale,doc_id,position,clicked,dwell_s\n", "no rows"),
])
def test_unreadable_files_are_refused_and_nothing_is_touched(ws, policy, tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    before = snapshot(ws)
    with pytest.raises(DataError) as err:
        run(ws, policy, path)
    assert needle in str(err.value) and "nothing could be ingested" in str(err.value), str(err.value)
    assert_untouched(ws, before)


def test_a_file_whose_every_row_is_bad_is_refused(ws, policy, day, tmp_path):
    path = write_events(fresh(day, "allbad").assign(doc_id="nowhere"), tmp_path / "allbad.parquet")
    before = snapshot(ws)
    with pytest.raises(DataError, match=r"every one of its \d+ rows is bad \(\d+ doc_id: unknown document\)"):
        run(ws, policy, path)
    assert_untouched(ws, before)


def test_the_same_file_twice_is_ingested_once(ws, policy, day, tmp_path):
    path = write_events(fresh(day, "twice"), tmp_path / "a.parquet")
    first, _ = run(ws, policy, path)
    copy = tmp_path / "renamed-copy.parquet"
    copy.write_bytes(path.read_bytes())
    before = snapshot(ws)
    again, log = run(ws, policy, path, copy)
    assert again["skipped"] == 2 and again["batches"] == [] and again["refused"] == []
    assert "same content); skipped" in log
    assert_untouched(ws, before)
    assert first["batches"][0] in ingest.batch_numbers(Workspace.at(ws).layout)


def test_events_already_ingested_in_another_file_are_quarantined(ws, policy, day, tmp_path):
    frame = fresh(day, "dup")
    first, _ = run(ws, policy, write_events(frame, tmp_path / "one.parquet"))
    overlap = pd.concat([frame.iloc[:3], fresh(day.iloc[:2], "dup-new")], ignore_index=True)
    result, _ = run(ws, policy, write_events(overlap, tmp_path / "two.csv"))
    (info,) = result["files"]
    assert info["events"] == 2 and info["quarantined"] == 3
    reasons = set(quarantine_of(ws, info["batches"][0]).reason)
    assert reasons == {"event_id: already ingested (an earlier batch)"}


def test_refused_and_good_files_together_exit_non_zero_and_keep_the_good_one(ws, files, day, tmp_path):
    good = write_events(fresh(day, "cli"), tmp_path / "good.parquet")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"")
    res = serm(ws, "ingest", str(good), str(bad), "--policy", str(files["policy"]))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "1 file(s) ingested, 0 already ingested, 1 refused" in res.stdout
    assert "bad.jsonl: refused" in res.stdout and "the file is empty" in res.stdout
    res = serm(ws, "ingest", str(bad), "--policy", str(files["policy"]))
    assert res.returncode != 0 and "nothing could be ingested" in res.stderr + res.stdout


def test_documents_are_added_and_bad_document_rows_quarantined(ws, policy, tmp_path):
    docs = pd.DataFrame({"doc_id": ["new_d1", "new_d2", "new_d2", None, "new_d4"],
                         "title": ["wing flutter", "shock tubes", "dup", "x", ""],
                         "text": ["a study", "a note", "dup", "y", ""],
                         "locale": ["en"] * 5, "source": ["lab"] * 5})
    path = tmp_path / "docs.csv"
    docs.to_csv(path, index=False)
    result, log = run(ws, policy, documents=path)
    assert result["documents"]["documents"] == 2 and result["documents"]["quarantined"] == 3
    stored = pd.read_parquet(Workspace.at(ws).layout.documents)
    assert {"new_d1", "new_d2"} <= set(stored.doc_id) and "source" in stored.columns
    assert "2 documents (2 new, 0 replaced), 3 quarantined" in log
    # events may now name the new documents
    ev = pd.DataFrame({"event_id": ["docs-1"], "ts": ["2026-11-05T10:00:00Z"], "query_id": ["qx"],
                       "query": ["flutter"], "locale": ["en"], "doc_id": ["new_d1"], "position": [1],
                       "clicked": [True], "dwell_s": [20.0]})
    result, _ = run(ws, policy, write_events(ev, tmp_path / "ev.csv"))
    assert result["files"][0]["events"] == 1


def test_documents_without_the_contract_columns_are_refused(ws, policy, tmp_path):
    path = tmp_path / "docs.parquet"
    pd.DataFrame({"id": ["d1"], "title": ["t"], "body": ["b"], "locale": ["en"]}).to_parquet(path)
    before = snapshot(ws)
    with pytest.raises(DataError, match=r"missing column\(s\) doc_id, text"):
        run(ws, policy, documents=path)
    assert_untouched(ws, before)


def test_judgments_with_grades_outside_0_3_stop_init(files, tmp_path):
    seed = pd.read_csv(files["folder"] / "seed.csv", keep_default_na=False)
    seed.loc[3, "grade"] = 4
    folder = tmp_path / "bad-seed"
    data = make_files_data(folder)
    seed.to_csv(folder / "seed.csv", index=False)
    res = serm(tmp_path / "ws", "init", "--policy", str(data["policy"]))
    assert res.returncode != 0
    err = res.stderr + res.stdout
    assert "data.seed_judgments" in err and "grade outside 0-3" in err and "has grade 4" in err, err
    assert not (tmp_path / "ws" / "data" / "model").exists()
