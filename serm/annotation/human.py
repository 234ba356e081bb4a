"""Human review of escalated pairs.

`SimulatedHuman` stands in for reviewers in the default run and benchmarks: it resolves up to
`budget` escalations per round with the hidden gold grade (a simulation, named as such in every
report). Real reviewers go through `export_queue` / `import_resolutions` (CSV).
"""

from __future__ import annotations

from pathlib import Path

from serm.errors import DataError


class SimulatedHuman:
    name = "human(simulated)"

    def __init__(self, budget: int, oracle: set[tuple[str, str]]):
        self.budget = budget
        self.oracle = oracle  # gold (query_id, doc_id) pairs: grade 3, else 0

    def resolve(self, escalated):
        """Returns the resolved rows (status 'human') and the still-open rest."""
        take = escalated.head(self.budget).copy()
        take["grade"] = [3 if (q, d) in self.oracle else 0 for q, d in zip(take.query_id, take.doc_id)]
        take["grade"] = take["grade"].astype("Int8")
        take["agreement"] = 1.0
        take["status"] = "human"
        take["why"] = "resolved by " + self.name
        return take, escalated.iloc[len(take):].copy()


def export_queue(queue, path: Path) -> Path:
    """Write open escalations as CSV for reviewers: fill in `grade` (0-3) and import."""
    out = queue.copy()
    out["grade"] = ""
    out.to_csv(path, index=False)
    return path


def import_resolutions(path: Path, queue):
    """Read reviewer grades; rows left blank stay open. Unknown pairs or bad grades are errors."""
    import pandas as pd

    df = pd.read_csv(path, dtype={"query_id": str, "doc_id": str}, keep_default_na=False)
    for col in ("query_id", "doc_id", "grade"):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r}")
    df = df[df["grade"].astype(str).str.strip() != ""]
    grades = pd.to_numeric(df["grade"], errors="coerce")
    bad = grades.isna() | ~grades.isin([0, 1, 2, 3])
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} row(s) with a grade outside 0-3, e.g. {df.loc[bad, 'grade'].iloc[0]!r}")
    known = set(zip(queue.query_id, queue.doc_id))
    unknown = [k for k in zip(df.query_id, df.doc_id) if k not in known]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} pair(s) are not in the escalation queue, e.g. {unknown[0]}")
    return df.assign(grade=grades.astype("Int8"))
