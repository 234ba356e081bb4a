"""Stand in for a team's reviewers in the worked example: fill the `grade` column of an
exported review CSV (`serm escalations export --format csv`) from reviewer_answers.csv.

    .venv/bin/python examples/own-data/answer_review.py review.csv

A pair the answers do not cover is left blank (it stays open in the queue)."""

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main(path: str) -> None:
    review = pd.read_csv(path, dtype=str, keep_default_na=False)
    answers = pd.read_csv(HERE / "reviewer_answers.csv", dtype=str)
    grade = dict(zip(zip(answers.query_id, answers.doc_id), answers.grade))
    review["grade"] = [grade.get(pair, "") for pair in zip(review.query_id, review.doc_id)]
    review.to_csv(path, index=False)
    print(f"{path}: {int((review.grade != '').sum())} of {len(review)} pairs graded")


if __name__ == "__main__":
    main(sys.argv[1])
