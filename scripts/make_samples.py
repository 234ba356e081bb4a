"""Build the "bring your own data" sample in `examples/own-data/` from the Cranfield collection.

The 225 Cranfield queries are split (seeded) into 60 seed queries, 50 static-test queries and
115 stream queries. A "production" Okapi BM25 ranker (title + text of all 1400 documents) shows
each stream query's top 8; clicks come from a position-based model on the hidden Cranfield
grades, 3 sessions per query, and the stream is written as three days of events, one file per
format (parquet, CSV with 4 deliberately bad rows, JSONL). The reviewers' answers are the
Cranfield grades of every shown pair. Same inputs, same files: every draw comes from one
seeded generator and nothing reads the clock.

    .venv/bin/python scripts/make_samples.py [--cranfield DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serm import schema  # noqa: E402  (the repo root goes on the path first)

SEED = 13
N_SEED, N_STATIC = 60, 50
SHOWN = 8                                   # results production shows per query
NEGATIVE_POOL, NEGATIVES = 20, 4            # seed negatives: 4 unjudged docs of the BM25 top 20
STATIC_EXTRA_GRADE = 2                      # static test keeps judged pairs >= this beyond the top 8
K1, B = 1.2, 0.75
SESSIONS = 3
ATTRACT = np.array([0.05, 0.2, 0.5, 0.85])  # P(click | examined) by grade 0..3
DAYS = (("2026-11-02", "parquet"), ("2026-11-03", "csv"), ("2026-11-04", "jsonl"))
DAY_START_H, DAY_HOURS = 9, 9               # queries spread over 09:00-18:00 UTC
MISSING_DOC = "cran_missing_doc"
PARQUET_COMPRESSION = "zstd"                # as the Cranfield source files
EVENT_COLUMNS = [*schema.EVENT_COLUMNS, "session_id", "served_score"]
JUDGMENT_COLUMNS = list(schema.JUDGMENT_COLUMNS)
TOKEN = re.compile(r"\w+")


@dataclass
class Collection:
    docs: pd.DataFrame             # doc_id (cran_dN), title, text, author, biblio; row i = BM25 column i
    queries: pd.Series             # query text by query_id, in query-number order
    grades: dict                   # (query_id, doc_id) -> Cranfield grade; unjudged pairs are 0
    scores: np.ndarray             # BM25, one row per query (order of `queries`), one column per doc

    def grade(self, query_id: str, doc_id: str) -> int:
        return self.grades.get((query_id, doc_id), 0)

    def ranking(self, query_id: str, k: int) -> list[tuple[str, float]]:
        """The top `k` (doc_id, score) of a query, best first; ties by document number."""
        row = self.scores[self.queries.index.get_loc(query_id)]
        top = np.argsort(-row, kind="stable")[:k]
        return [(self.docs.doc_id.iat[i], float(row[i])) for i in top]

    def judged(self, query_id: str) -> list[str]:
        return [d for (q, d) in self.grades if q == query_id]


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def bm25(doc_texts: list[str], queries: list[str]) -> np.ndarray:
    """Okapi BM25 (k1, b; idf log(1 + (N - df + .5) / (df + .5))) of every query against every
    document: an array (queries, documents). Each distinct query term counts once."""
    docs = [tokenize(t) for t in doc_texts]
    terms = [sorted(set(tokenize(q))) for q in queries]
    vocab = {t: i for i, t in enumerate(sorted({t for ts in terms for t in ts}))}
    tf = np.zeros((len(docs), len(vocab)))
    for row, tokens in zip(tf, docs):
        np.add.at(row, [vocab[t] for t in tokens if t in vocab], 1.0)
    length = np.array([len(t) for t in docs], dtype=float)
    df = (tf > 0).sum(axis=0)
    idf = np.log(1.0 + (len(docs) - df + 0.5) / (df + 0.5))
    weight = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / length.mean())[:, None])
    return np.stack([weight[:, [vocab[t] for t in ts]].sum(axis=1) for ts in terms])


def number(ids: pd.Series) -> pd.Series:
    """The number in ids like cran_q12 / cran_d7, for sorting."""
    return ids.str.extract(r"(\d+)$", expand=False).astype(int)


def load(folder: Path) -> Collection:
    docs = pd.read_parquet(folder / "documents.parquet")
    docs = docs.assign(doc_id="cran_d" + docs.doc_id.astype(str)).sort_values("doc_id", key=number)
    docs = docs.reset_index(drop=True)
    judgments = pd.read_parquet(folder / "judgments.parquet")
    queries = judgments.drop_duplicates("query_id").set_index("query_id")["query"]
    queries = queries.sort_index(key=number)
    grades = {(q, d): int(g) for q, d, g in zip(judgments.query_id, judgments.doc_id, judgments.grade)}
    scores = bm25((docs.title + " " + docs.text).tolist(), queries.tolist())
    return Collection(docs, queries, grades, scores)


def split_queries(query_ids: list[str], rng: np.random.Generator) -> tuple[list, list, list]:
    order = [query_ids[i] for i in rng.permutation(len(query_ids))]
    return order[:N_SEED], order[N_SEED:N_SEED + N_STATIC], order[N_SEED + N_STATIC:]


def judgment_rows(coll: Collection, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """The judgments format for (query_id, doc_id) pairs, sorted by query number."""
    docs = coll.docs.set_index("doc_id")
    rows = pd.DataFrame(pairs, columns=["query_id", "doc_id"])
    rows["query"] = rows.query_id.map(coll.queries)
    rows["doc_title"] = rows.doc_id.map(docs.title)
    rows["doc_text"] = ""   # the catalogue holds the text: a files source reads it from there
    rows["grade"] = [coll.grade(q, d) for q, d in pairs]
    rows["locale"] = "en"
    return rows.sort_values("query_id", key=number, kind="stable")[JUDGMENT_COLUMNS].reset_index(drop=True)


def seed_set(coll: Collection, queries: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """Judged pairs of the seed queries plus, per query, 4 unjudged BM25 top-20 docs as grade 0."""
    pairs = []
    for q in queries:
        judged = coll.judged(q)
        pool = [d for d, _ in coll.ranking(q, NEGATIVE_POOL) if d not in judged]
        picked = sorted(rng.choice(len(pool), size=min(NEGATIVES, len(pool)), replace=False))
        pairs += [(q, d) for d in judged] + [(q, pool[i]) for i in picked]
    return judgment_rows(coll, pairs)


def static_set(coll: Collection, queries: list[str]) -> pd.DataFrame:
    """Per query: the BM25 top 8 (graded, 0 if unjudged) and every judged pair of grade >= 2 beyond it."""
    pairs = []
    for q in queries:
        top = [d for d, _ in coll.ranking(q, SHOWN)]
        extra = [d for d in coll.judged(q) if d not in top and coll.grade(q, d) >= STATIC_EXTRA_GRADE]
        pairs += [(q, d) for d in top + extra]
    return judgment_rows(coll, pairs)


def simulate_day(coll: Collection, queries: list[str], day: str, first_id: int,
                 rng: np.random.Generator) -> pd.DataFrame:
    """One day of impressions: each query's BM25 top 8 shown in 3 sessions, clicks from the
    position-based model P(examine k) = 1/k, P(click | examined) = ATTRACT[grade]."""
    start = pd.Timestamp(f"{day}T{DAY_START_H:02d}:00:00Z")
    rows = []
    for i, q in enumerate(queries):
        ts = start + pd.Timedelta(seconds=round(i * DAY_HOURS * 3600 / len(queries)))
        for session in range(1, SESSIONS + 1):
            ts += pd.Timedelta(seconds=int(rng.integers(2, 10)))
            rows += [{"ts": ts, "query_id": q, "query": coll.queries[q], "locale": "en", "doc_id": d,
                      "position": k, "session_id": f"s-{q}-{session}", "served_score": round(score, 4),
                      "grade": coll.grade(q, d)}
                     for k, (d, score) in enumerate(coll.ranking(q, SHOWN), start=1)]
    events = pd.DataFrame(rows)
    grade = events.pop("grade").to_numpy()
    examined = rng.random(len(events)) < 1.0 / events.position.to_numpy()
    events["clicked"] = examined & (rng.random(len(events)) < ATTRACT[grade])
    dwell = rng.lognormal(mean=np.log(4.0 + 12.0 * grade), sigma=0.5)
    events["dwell_s"] = np.where(events.clicked, np.round(dwell, 2), 0.0)
    events["event_id"] = [f"ev-{first_id + n:06d}" for n in range(len(events))]
    return events[EVENT_COLUMNS]


def bad_rows(events: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """The 4 rows quarantine must catch, each a copy of an earlier row with one defect:
    (a) an unknown doc_id, (b) an exact duplicate (same event_id), (c) dwell_s -3, (d) position "top"."""
    clicked = events[events.clicked].iloc[0]
    unknown = events.iloc[0].copy()
    unknown[["event_id", "doc_id"]] = [f"ev-{first_id:06d}", MISSING_DOC]
    negative = clicked.copy()
    negative[["event_id", "dwell_s"]] = [f"ev-{first_id + 1:06d}", -3.0]
    wordy = events.iloc[2].copy()
    wordy[["event_id", "position"]] = [f"ev-{first_id + 2:06d}", "top"]
    return pd.DataFrame([unknown, events.iloc[1], negative, wordy])[EVENT_COLUMNS]


def write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    lines = (json.dumps(row, ensure_ascii=False) for row in frame.to_dict("records"))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_events(frame: pd.DataFrame, path: Path) -> None:
    """Parquet keeps `ts` a UTC timestamp; CSV and JSONL write it as ISO 8601 text."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False, compression=PARQUET_COMPRESSION)
        return
    frame = frame.assign(ts=pd.to_datetime(frame.ts, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        write_jsonl(frame, path)


def stream(coll: Collection, queries: list[str], out: Path, rng: np.random.Generator) -> tuple[list, pd.DataFrame]:
    """Write the 3 days of events; returns each day's file, format, query and row counts and bad
    rows (None but in the CSV), and the clean events of all days."""
    days, clean, next_id = [], [], 1
    for (day, fmt), chunk in zip(DAYS, np.array_split(np.array(queries, dtype=object), len(DAYS))):
        events = simulate_day(coll, list(chunk), day, next_id, rng)
        next_id += len(events)
        clean.append(events)
        written, bad = events, None
        if fmt == "csv":
            bad = bad_rows(events, next_id)
            next_id += len(bad) - 1                      # (b) reuses an existing id
            written = pd.concat([events.astype({"position": object}), bad], ignore_index=True)
        write_events(written, out / "events" / f"{day}.{fmt}")
        days.append({"file": f"events/{day}.{fmt}", "format": fmt, "queries": len(chunk),
                     "rows": len(written), "bad": bad})
    return days, pd.concat(clean, ignore_index=True)


def reviewer_answers(coll: Collection, events: pd.DataFrame) -> pd.DataFrame:
    pairs = events[["query_id", "doc_id"]].drop_duplicates()
    pairs = pairs.sort_values(["query_id", "doc_id"], key=number).reset_index(drop=True)
    return pairs.assign(grade=[coll.grade(q, d) for q, d in zip(pairs.query_id, pairs.doc_id)])


def catalogue(coll: Collection, *frames: pd.DataFrame) -> pd.DataFrame:
    """The documents any file refers to, plus every judged document, in the document contract
    (doc_id, title, text, locale) with author and biblio kept. A document with neither title nor
    text breaks the contract and is left out (Cranfield has one judged: cran_d995, never shown)."""
    used = {d for (_, d) in coll.grades}.union(*(set(f.doc_id) for f in frames))
    blank = (coll.docs.title == "") & (coll.docs.text == "")
    docs = coll.docs[coll.docs.doc_id.isin(used) & ~blank].assign(locale="en")
    return docs[[*schema.DOCUMENT_COLUMNS, "author", "biblio"]].reset_index(drop=True)


def readme(docs: pd.DataFrame, seed: pd.DataFrame, static: pd.DataFrame, days: list,
           answers: pd.DataFrame) -> str:
    day_lines = "\n".join(f"| `{d['file']}` | {d['format']} | {d['queries']} | {d['rows']} |" for d in days)
    bad_day = next(d for d in days if d["bad"] is not None)
    a, b, c, d = bad_day["bad"].event_id
    return f"""# Bring your own data: a worked sample

A small team-data sample in the formats of SERM's `files` data source.
It is derived from the **Cranfield collection** (Cleverdon 1967), a freely redistributed research
collection of 1400 aeronautics abstracts and 225 queries with relevance judgments.
Cranfield's relevance codes are mapped to grades 1 → 3, 2 → 2, 3 and 4 → 1, −1 → 0;
an unjudged pair counts as grade 0. Document `N` of the collection is `doc_id` `cran_dN`.

Every file here is generated, deterministically (seed {SEED}), by `scripts/make_samples.py`:

```bash
.venv/bin/python scripts/make_samples.py   # options: --cranfield DIR (default ../shared/data/cranfield), --out DIR
```

The queries are split into three disjoint sets:
{seed.query_id.nunique()} seed, {static.query_id.nunique()} static-test and {sum(d["queries"] for d in days)} stream queries.
The events are **simulated** from the judgments:
a "production" Okapi BM25 ranker (k1 {K1}, b {B}, over title + text) shows each stream query's top {SHOWN}
in {SESSIONS} sessions, and clicks follow a position-based model on the hidden Cranfield grades:
P(examine rank k) = 1/k, P(click | examined) = {", ".join(map(str, ATTRACT))} for grades 0-3,
and a click's dwell time is lognormal(log(4 + 12·grade), 0.5) seconds.

| file | what | rows |
|---|---|---|
| `documents.parquet` | the document catalogue: `doc_id, title, text, locale` (+ `author`, `biblio`); every document a file below refers to and every judged one with a title or text | {len(docs)} |
| `seed.csv` | seed judgments (train the first model): `query_id, query, doc_id, doc_title, doc_text, grade, locale` (`doc_text` left empty: SERM reads a judged document's text from the catalogue); each query's judged pairs plus {NEGATIVES} unjudged BM25 top-{NEGATIVE_POOL} documents as grade 0 | {len(seed)} ({seed.query_id.nunique()} queries) |
| `static_test.jsonl` | the static test set, same columns, JSON lines: each query's BM25 top {SHOWN} (grade 0 if unjudged) plus its judged pairs of grade ≥ {STATIC_EXTRA_GRADE} beyond them | {len(static)} ({static.query_id.nunique()} queries) |
| `events/*` | three days of search logs, below | |
| `reviewer_answers.csv` | `query_id, doc_id, grade`: the Cranfield grade of every pair shown in the events, standing in for what a team's reviewers answer when SERM asks them to label pairs | {len(answers)} |

The events come one file per day, each day in another format, with the columns
`{", ".join(EVENT_COLUMNS)}`:
`ts` is ISO 8601 UTC (a timestamp column in the parquet file), `position` 1-{SHOWN}, `clicked` a boolean,
`dwell_s` 0.0 when not clicked, `session_id` `s-<query_id>-<n>`, and `served_score` the BM25 score production ranked by.

| file | format | queries | rows |
|---|---|---|---|
{day_lines}

The last 4 rows of `{bad_day['file']}` are **deliberately bad**, for the quarantine example;
each is a copy of an earlier row of that file with one defect:

1. `{a}`: `doc_id` is `{MISSING_DOC}`, a document not in the catalogue;
2. `{b}`: an exact copy of an earlier row (its `event_id` is a duplicate);
3. `{c}`: `dwell_s` is `-3`;
4. `{d}`: `position` is `top`, not a number.

Every other row of every file is valid.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cranfield", type=Path, default=REPO.parent / "shared" / "data" / "cranfield",
                        help="folder with Cranfield's documents.parquet and judgments.parquet")
    parser.add_argument("--out", type=Path, default=REPO / "examples" / "own-data", help="output folder")
    args = parser.parse_args(argv)

    coll = load(args.cranfield)
    rng = np.random.default_rng(SEED)
    seed_q, static_q, stream_q = split_queries(list(coll.queries.index), rng)
    seed, static = seed_set(coll, seed_q, rng), static_set(coll, static_q)

    shutil.rmtree(args.out / "events", ignore_errors=True)
    (args.out / "events").mkdir(parents=True)
    days, events = stream(coll, stream_q, args.out, rng)
    answers = reviewer_answers(coll, events)
    docs = catalogue(coll, seed, static, events)

    docs.to_parquet(args.out / "documents.parquet", index=False, compression=PARQUET_COMPRESSION)
    seed.to_csv(args.out / "seed.csv", index=False)
    write_jsonl(static, args.out / "static_test.jsonl")
    answers.to_csv(args.out / "reviewer_answers.csv", index=False)
    (args.out / "README.md").write_text(readme(docs, seed, static, days, answers), encoding="utf-8")
    print(f"wrote {args.out}: {len(docs)} documents, {len(seed)} seed and {len(static)} static-test "
          f"pairs, {len(events)} events (+4 bad rows), {len(answers)} reviewer answers")


if __name__ == "__main__":
    main()
