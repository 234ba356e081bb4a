"""Test-sized data for the `files` source: a subset of the shipped Cranfield sample
(`examples/own-data`) written next to a copy of `tests/policies/tiny-files.yaml`."""

from pathlib import Path

import pandas as pd

from tests.conftest import ROOT

SAMPLE = ROOT / "examples" / "own-data"
POLICY = ROOT / "tests" / "policies" / "tiny-files.yaml"
DAYS = ("2026-11-02.parquet", "2026-11-03.csv", "2026-11-04.jsonl")


def _first_queries(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    keep = list(dict.fromkeys(frame["query_id"]))[:n]
    return frame[frame["query_id"].isin(keep)].reset_index(drop=True)


def read_events(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"doc_id": str, "event_id": str})
    return pd.read_json(path, lines=True, dtype={"doc_id": str, "event_id": str})


def write_events(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso")
    return path


def make_files_data(folder: Path, seed_queries: int = 16, test_queries: int = 8,
                    stream_queries: int = 10) -> dict:
    """Documents, seed and static-test judgments, one events file per sample day (its first
    `stream_queries` queries, the CSV day without its deliberately bad rows) and the
    reviewers' answers, in `folder`. Returns the paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "documents.parquet").write_bytes((SAMPLE / "documents.parquet").read_bytes())
    _first_queries(pd.read_csv(SAMPLE / "seed.csv", keep_default_na=False), seed_queries) \
        .to_csv(folder / "seed.csv", index=False)
    _first_queries(pd.read_json(SAMPLE / "static_test.jsonl", lines=True, dtype={"doc_text": str}), test_queries) \
        .to_json(folder / "static_test.jsonl", orient="records", lines=True)
    events = []
    for day in DAYS:
        frame = read_events(SAMPLE / "events" / day)
        if day.endswith(".csv"):
            frame = frame.iloc[:-4]   # the sample's four deliberately bad rows
        events.append(write_events(_first_queries(frame, stream_queries), folder / "events" / day))
    (folder / "reviewer_answers.csv").write_bytes((SAMPLE / "reviewer_answers.csv").read_bytes())
    policy = folder / "policy.yaml"
    policy.write_text(POLICY.read_text())
    return {"policy": policy, "events": events, "answers": folder / "reviewer_answers.csv",
            "documents": folder / "documents.parquet", "folder": folder}
