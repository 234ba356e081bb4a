"""The escalation queue: pairs the agents could not agree on, waiting for people.

Every round adds its open escalations to `data/escalations/queue.parquet` (versioned with the
rest of `data/`). Reviewers work on an export of it and hand their grades back:

    serm escalations export --format csv|labelstudio|argilla [--out FILE]
    serm escalations import FILE          # CSV, Label Studio JSON export, or Argilla records

An import is all or nothing: a grade outside 0-3, a pair that is not in the queue or a file
in no known format refuses the whole file and changes nothing. Resolved pairs move from the
queue to `data/escalations/resolved.parquet`; the next round trains on them (status `human`)
and the `human` agent votes their grades whenever the miner picks them again. Until a pair
is resolved it never reaches training.

Formats
- csv: one row per pair with its text; reviewers fill in `grade` (blank = still open) and may
  add a `reviewer` column.
- labelstudio: a task list (`[{"data": {...}}]`) to import into a Label Studio project whose
  labeling config is written beside it (`<out>.labelstudio.xml`: a single-choice `grade`
  control with choices 0-3). Import reads Label Studio's JSON export: each task's latest
  non-cancelled annotation, its `grade` choice.
- argilla: records for an Argilla 2 dataset (`fields` query/document, `metadata` with the ids)
  and its settings beside it (`<out>.argilla-settings.json`: a `grade` rating question 0-3).
  Import reads records with `responses` (nested, or flattened as `grade.responses`); only
  submitted responses count, and reviewers who disagree on a pair leave it open.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from serm import schema
from serm.data import without_pairs
from serm.errors import DataError

QUEUE_COLUMNS = list(schema.ESCALATION_COLUMNS)
RESOLVED_COLUMNS = list(schema.REVIEW_COLUMNS)
FORMATS = ("csv", "labelstudio", "argilla")
GRADE_HINTS = {0: "irrelevant: does not answer the query", 1: "related: on topic, does not answer",
               2: "partly answers the query", 3: "answers the query"}


def queue_path(data: Path) -> Path:
    return Path(data) / schema.ESCALATION_QUEUE_FILE


def resolved_path(data: Path) -> Path:
    return Path(data) / schema.REVIEWS_FILE


def read_queue(data: Path):
    import pandas as pd

    p = queue_path(data)
    if not p.exists():
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    queue = pd.read_parquet(p)
    if "purpose" not in queue.columns:      # queues written before test requests existed
        queue["purpose"] = schema.TRAIN
    missing = set(QUEUE_COLUMNS) - set(queue.columns)
    if missing:
        raise DataError(f"{p}: the escalation queue lacks column(s) {', '.join(sorted(missing))}; restore it "
                        "from the workspace's last version (`git checkout data.dvc && dvc checkout`)")
    return queue[QUEUE_COLUMNS]


def read_resolved(data: Path):
    import pandas as pd

    p = resolved_path(data)
    if p.exists():
        return pd.read_parquet(p)
    out = pd.DataFrame(columns=RESOLVED_COLUMNS)
    out["grade"] = out["grade"].astype("Int8")
    out["trained_round"] = out["trained_round"].astype("Int64")
    return out


def queue_rows(escalated, candidates, round_no: int, purpose: str = schema.TRAIN):
    """A round's open escalations (or test requests) as queue rows, with the text reviewers need."""
    text = candidates[["query_id", "doc_id", "locale", "query", "doc_title", "doc_text"]].drop_duplicates(
        ["query_id", "doc_id"])
    rows = escalated[["query_id", "doc_id", "why", "agents"]].merge(text, on=["query_id", "doc_id"], how="left")
    rows["round"] = round_no
    rows["purpose"] = purpose
    rows["escalated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return rows[QUEUE_COLUMNS].reset_index(drop=True)


def merge_queue(queue, rows):
    """`queue` plus `rows`; a pair already waiting keeps its first entry."""
    import pandas as pd

    if not len(rows):
        return queue.reset_index(drop=True)
    out = pd.concat([queue, rows], ignore_index=True) if len(queue) else rows
    return out.drop_duplicates(["query_id", "doc_id"], keep="first").reset_index(drop=True)


# --------------------------------------------------------------------------- export
def export(queue, fmt: str, out: Path) -> list[Path]:
    """Write the open escalations for reviewers; returns the files written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if "purpose" not in queue.columns:   # a queue built before test requests existed
        queue = queue.assign(purpose=schema.TRAIN)
    if fmt == "csv":
        frame = queue[QUEUE_COLUMNS].copy()
        frame["grade"] = ""
        frame.to_csv(out, index=False)
        return [out]
    if fmt == "labelstudio":
        tasks = [{"data": {**_plain_row(r), "passage": _passage(r)}} for r in queue.to_dict("records")]
        out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        config = out.with_name(out.name + ".labelstudio.xml")
        choices = "\n".join(f'    <Choice value="{g}" hint="{h}"/>' for g, h in GRADE_HINTS.items())
        config.write_text(
            '<View>\n  <Header value="$query"/>\n  <Text name="passage" value="$passage"/>\n'
            f'  <Choices name="grade" toName="passage" choice="single" required="true">\n{choices}\n  </Choices>\n'
            "</View>\n", encoding="utf-8")
        return [out, config]
    if fmt == "argilla":
        records = [{"id": f"{r['query_id']}::{r['doc_id']}", "fields": {"query": r["query"], "document": _passage(r)},
                    "metadata": {k: _plain(r[k]) for k in ("query_id", "doc_id", "locale", "round", "why")}}
                   for r in queue.to_dict("records")]
        out.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        settings = out.with_name(out.name + ".argilla-settings.json")
        settings.write_text(json.dumps({
            "guidelines": "Grade how well the document answers the query: "
                          + "; ".join(f"{g} = {h}" for g, h in GRADE_HINTS.items()),
            "fields": [{"name": "query", "type": "text"}, {"name": "document", "type": "text"}],
            "questions": [{"name": "grade", "type": "rating", "values": list(GRADE_HINTS), "required": True}],
            "metadata": [{"name": n, "type": "terms"} for n in ("query_id", "doc_id", "locale", "why")]
            + [{"name": "round", "type": "integer"}]}, indent=1) + "\n", encoding="utf-8")
        return [out, settings]
    raise DataError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def _passage(r: dict) -> str:
    title, text = str(r.get("doc_title") or ""), str(r.get("doc_text") or "")
    return f"{title}: {text}" if title and text else title or text


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _plain_row(r: dict) -> dict:
    return {k: _plain(v) for k, v in r.items()}


# --------------------------------------------------------------------------- import
def parse_resolutions(path: Path, queue):
    """Reviewer grades from `path` (format detected from the content). Returns a frame
    query_id, doc_id, grade, reviewer and the number of entries left open. Raises DataError,
    naming the row, for anything it cannot take; nothing is applied then."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass the file your reviewers filled in")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; export it again as UTF-8 CSV or JSON") from None
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); "
                            "pass Label Studio's JSON export or Argilla records") from None
        if isinstance(data, dict):
            data = data.get("records") or data.get("tasks") or [data]
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise DataError(f"{path}: expected a JSON list of tasks or records")
        if any("annotations" in x or "data" in x for x in data):
            rows, still_open = _from_labelstudio(data, path)
        else:
            rows, still_open = _from_argilla(data, path)
    else:
        rows, still_open = _from_csv(path)
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade", "reviewer", "where"])
    _validate(df, queue, path)
    df = df.drop(columns=["where"]).drop_duplicates(["query_id", "doc_id"], keep="last")
    df["grade"] = df["grade"].astype(int).astype("Int8")
    return df.reset_index(drop=True), still_open


def _grade(value):
    """An int 0-3, or None when the value is not exactly one (3.0 and "3" are; "3 - good" is not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= value <= 3:
        return int(value)
    if isinstance(value, str) and value.strip() in {"0", "1", "2", "3"}:
        return int(value.strip())
    return None


def _from_csv(path: Path):
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}); export the queue with "
                        "`serm escalations export --format csv` and fill in its grade column") from None
    missing = [c for c in ("query_id", "doc_id", "grade") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the CSV needs query_id, doc_id, grade")
    rows, still_open = [], 0
    for i, r in enumerate(df.to_dict("records"), start=2):   # line 1 is the header
        if not str(r["grade"]).strip():
            still_open += 1
            continue
        rows.append((r["query_id"], r["doc_id"], r["grade"], str(r.get("reviewer", "") or ""), f"line {i}"))
    return rows, still_open


def _from_labelstudio(tasks: list[dict], path: Path):
    rows, still_open = [], 0
    for i, task in enumerate(tasks):
        data = task.get("data") or {}
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        choice = None
        for ann in reversed(done):   # the latest annotation wins
            for res in ann.get("result") or []:
                if res.get("from_name") == "grade" and res.get("type") == "choices":
                    picked = (res.get("value") or {}).get("choices") or []
                    choice = picked[0] if len(picked) == 1 else picked
            if choice is not None:
                who = ann.get("completed_by")
                reviewer = str(who.get("email", who.get("id", ""))) if isinstance(who, dict) else str(who or "")
                break
        if choice is None:
            still_open += 1
            continue
        rows.append((data.get("query_id"), data.get("doc_id"), choice, reviewer, f"task {task.get('id', i)}"))
    return rows, still_open


def _from_argilla(records: list[dict], path: Path):
    rows, still_open = [], 0
    for i, rec in enumerate(records):
        meta = rec.get("metadata") or {}
        qid, did = meta.get("query_id"), meta.get("doc_id")
        if (qid is None or did is None) and isinstance(rec.get("id"), str) and "::" in rec["id"]:
            qid, did = rec["id"].split("::", 1)
        answers = _argilla_responses(rec)
        where = f"record {rec.get('id', i)}"
        if not answers:
            still_open += 1
            continue
        bad = [v for v, _ in answers if _grade(v) is None]
        if not bad and len({_grade(v) for v, _ in answers}) > 1:
            still_open += 1   # reviewers disagree: the pair stays open for another look
            continue
        value = bad[0] if bad else answers[0][0]   # a bad value is refused by `_validate`
        rows.append((qid, did, value, ",".join(sorted({u for _, u in answers if u})), where))
    return rows, still_open


def _argilla_responses(rec: dict) -> list[tuple[object, str]]:
    """(value, user) of the submitted `grade` responses, nested or flattened."""
    out = []
    resp = rec.get("responses")
    if isinstance(resp, dict):
        items = [dict(r, question_name="grade") for r in resp.get("grade") or [] if isinstance(r, dict)]
    elif isinstance(resp, list):
        items = [r for r in resp if isinstance(r, dict) and r.get("question_name") == "grade"]
    else:
        values = rec.get("grade.responses") or []
        users = rec.get("grade.responses.users") or [""] * len(values)
        status = rec.get("grade.responses.status") or ["submitted"] * len(values)
        items = [{"value": v, "user_id": u, "status": s} for v, u, s in zip(values, users, status)]
    for r in items:
        if r.get("status", "submitted") == "submitted" and "value" in r:
            out.append((r["value"], str(r.get("user_id") or "")))
    return out


def _validate(df, queue, path: Path) -> None:
    problems = []
    waiting = set(zip(queue.query_id, queue.doc_id))
    for r in df.itertuples(index=False):
        if r.query_id in (None, "") or r.doc_id in (None, ""):
            problems.append(f"{r.where}: no query_id/doc_id")
        elif _grade(r.grade) is None:
            problems.append(f"{r.where}: grade {r.grade!r} is not 0, 1, 2 or 3")
        elif (r.query_id, r.doc_id) not in waiting:
            problems.append(f"{r.where}: ({r.query_id}, {r.doc_id}) is not in the escalation queue "
                            "(already resolved, or from another workspace)")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(f"{path}: {len(problems)} problem(s), nothing imported: {shown}")
    if df.empty:
        raise DataError(f"{path}: no graded pairs in the file; fill in grades (0-3) and import again")


def apply_resolutions(data: Path, resolutions, source: str) -> dict:
    """Move resolved pairs out of the queue (both under `data`): escalations to
    resolved.parquet (the next round trains on them), test requests to the evolving test set
    (never trained on)."""
    import pandas as pd

    from serm.files import write_parquet

    queue, resolved = read_queue(data), read_resolved(data)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tests = set(zip(*[queue.loc[queue.purpose == schema.TEST, c] for c in schema.PAIR_KEY]))
    is_test = [k in tests for k in zip(resolutions.query_id, resolutions.doc_id)]
    test_rows = resolutions[is_test]
    if len(test_rows):
        add_test_labels(data, test_rows.merge(queue, on=list(schema.PAIR_KEY), how="left"), source, now)
    resolutions = resolutions[[not t for t in is_test]]
    new = resolutions.assign(source=source, resolved_at=now)
    new["trained_round"] = pd.array([None] * len(new), dtype="Int64")
    combined = pd.concat([resolved, new[RESOLVED_COLUMNS]], ignore_index=True) if len(resolved) else new[RESOLVED_COLUMNS]
    combined["grade"] = combined["grade"].astype("Int8")
    combined["trained_round"] = combined["trained_round"].astype("Int64")
    done = set(zip(new.query_id, new.doc_id)) | set(zip(test_rows.query_id, test_rows.doc_id))
    left = without_pairs(queue, done).reset_index(drop=True)
    if len(new) or resolved_path(data).exists():
        write_parquet(combined, resolved_path(data))
    write_parquet(left, queue_path(data))
    return {"resolved": int(len(new)), "test_labels": int(len(test_rows)), "queue_left": int(len(left))}


def read_test_labels(data: Path):
    """The evolving test set grown from reviewed test requests (judgments + round, reviewer)."""
    import pandas as pd

    p = Path(data) / schema.EVOLVING_TESTS_FILE
    return pd.read_parquet(p) if p.exists() else pd.DataFrame(columns=list(schema.EVOLVING_TEST_COLUMNS))


def add_test_labels(data: Path, rows, source: str, now: str) -> None:
    """Append reviewed test requests (query_id, doc_id, grade, reviewer + the queue's text) to
    the evolving test set."""
    import pandas as pd

    from serm.files import write_parquet

    rows = rows.assign(source=source, resolved_at=now)
    rows["grade"] = rows["grade"].astype(int).astype("int8")
    current = read_test_labels(data)
    out = pd.concat([current, rows[list(schema.EVOLVING_TEST_COLUMNS)]], ignore_index=True) if len(current) \
        else rows[list(schema.EVOLVING_TEST_COLUMNS)]
    out = out.drop_duplicates(list(schema.PAIR_KEY), keep="last").reset_index(drop=True)
    out["grade"] = out["grade"].astype("int8")
    write_parquet(out, Path(data) / schema.EVOLVING_TESTS_FILE)


def pending(resolved):
    """Resolutions not trained on yet."""
    return resolved[resolved["trained_round"].isna()] if len(resolved) else resolved
