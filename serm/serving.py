"""Using a SERM model outside the loop: `serm.load_model` and `serm score`.

    >>> import serm
    >>> model = serm.load_model("my-workspace", "production")          # doctest: +SKIP
    >>> model.score("who won super bowl 50?", ["The Broncos beat the Panthers 24-10 ...",
    ...                                        "Paris is the capital of France."])
    array([2.71, 0.04], dtype=float32)

`score` is the expected grade Σ g·P(g | query, document) in [0, 3], the ranking score SERM
promotes on; `predict_proba` the four grade probabilities; `grade` the most probable grade.
The document side is prepared exactly as in training (the saved `ModelSpec`: the title joined
in front, the query-biased passage window, the token budget), so a score here equals the score
the round evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from serm.errors import DataError

GRADE_COLUMNS = [f"p{g}" for g in range(4)]
# Column names a pairs file may use for the document side, in order of preference.
TEXT_COLUMNS = ("doc_text", "text")
TITLE_COLUMNS = ("doc_title", "title")


class Reranker:
    """A loaded relevance model: score (query, document) pairs in batches, on the GPU if present."""

    def __init__(self, model, ref: str, version: int | None = None):
        self.model = model        # serm.model.cross_encoder.RelevanceModel
        self.ref = ref
        self.version = version

    def __repr__(self) -> str:
        shown = f"v{self.version}" if self.version is not None else self.ref
        return f"Reranker({shown}, device={self.model.device!r}, max_length={self.model.spec.max_length})"

    @property
    def spec(self):
        return self.model.spec

    def predict_proba(self, queries: str | Sequence[str], documents: Sequence[str],
                      titles: Sequence[str] | None = None, batch_size: int | None = None):
        """(n, 4) grade probabilities. A single query string is paired with every document."""
        q, d, t = _pairs(queries, documents, titles)
        return self.model.predict_proba(q, t, d, batch_size)

    def score(self, queries: str | Sequence[str], documents: Sequence[str],
              titles: Sequence[str] | None = None, batch_size: int | None = None):
        """Expected grades in [0, 3]: sort documents by it, highest first."""
        return self.model.expected_grade(self.predict_proba(queries, documents, titles, batch_size))

    def grade(self, queries: str | Sequence[str], documents: Sequence[str],
              titles: Sequence[str] | None = None, batch_size: int | None = None):
        """The most probable grade (0-3) of each pair."""
        return self.predict_proba(queries, documents, titles, batch_size).argmax(axis=1).astype("int8")

    def score_frame(self, pairs, batch_size: int | None = None):
        """`pairs` (query, doc_text or text, optional doc_title or title) with `grade`, `p0`..`p3`
        and `score` added; the input's other columns are kept."""
        text_col = _first_column(pairs, TEXT_COLUMNS)
        title_col = next((c for c in TITLE_COLUMNS if c in pairs.columns), None)
        out = pairs.copy()
        titles = out[title_col].fillna("").astype(str).tolist() if title_col else None
        proba = self.predict_proba(out["query"].astype(str).tolist(), out[text_col].fillna("").astype(str).tolist(),
                                   titles, batch_size)
        for g, col in enumerate(GRADE_COLUMNS):
            out[col] = proba[:, g]
        out["grade"] = proba.argmax(axis=1).astype("int8")
        out["score"] = self.model.expected_grade(proba)
        return out


def _pairs(queries, documents, titles):
    documents = [str(d) for d in documents]
    if isinstance(queries, str):
        queries = [queries] * len(documents)
    queries = [str(q) for q in queries]
    if len(queries) != len(documents):
        raise DataError(f"{len(queries)} queries for {len(documents)} documents: pass one query per document, "
                        "or a single query string for all of them")
    titles = [""] * len(documents) if titles is None else ["" if t is None else str(t) for t in titles]
    if len(titles) != len(documents):
        raise DataError(f"{len(titles)} titles for {len(documents)} documents: pass one title per document or none")
    return queries, documents, titles


def _first_column(df, names) -> str:
    for name in names:
        if name in df.columns:
            return name
    raise DataError(f"pairs need a document text column ({' or '.join(names)}) beside `query`; "
                    f"found: {', '.join(map(str, df.columns))}")


def load_model(workspace: str | Path = ".", model: str = "production", device: str = "auto") -> Reranker:
    """The model `model` names (`production`, `v3`, a saved model directory, `builtin:minilm-l6`)
    of the SERM workspace at `workspace`, loaded for scoring.

    An earlier version is restored from its DVC version into a temporary directory and read into
    memory; the workspace is never changed."""
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.refs import model_source
    from serm.policy import ModelSpec

    with model_source(model, workspace) as src:
        loaded = RelevanceModel.load(src.path, src.spec(ModelSpec()), device=device)
    return Reranker(loaded, src.ref, src.version)


# --------------------------------------------------------------------------- serm score
def read_pairs(path: str | Path, documents: str | Path | None = None):
    """A pairs file (parquet, CSV, JSONL): `query` plus the document text, or `doc_id` and a
    documents file (`doc_id, title, text`) to take the text from."""
    from serm.data.judgments import read_table

    df = read_table(path)
    if "query" not in df.columns:
        raise DataError(f"{path}: no `query` column; pairs need query plus doc_text (or text), or doc_id with "
                        f"--documents FILE; found: {', '.join(map(str, df.columns))}")
    if df.empty:
        raise DataError(f"{path}: no pairs to score")
    if any(c in df.columns for c in TEXT_COLUMNS):
        return df
    if "doc_id" not in df.columns:
        raise DataError(f"{path}: no document text (doc_text or text) and no doc_id to look it up by")
    if documents is None:
        raise DataError(f"{path}: pairs name documents by doc_id only; pass --documents FILE (doc_id, title, text) "
                        "or a workspace with a document catalogue (--workspace DIR)")
    from serm.data.documents import load_documents

    docs = load_documents(documents).rename(columns={"title": "doc_title", "text": "doc_text"})
    docs["doc_id"] = docs["doc_id"].astype(str)
    df = df.assign(doc_id=df["doc_id"].astype(str))
    merged = df.merge(docs[["doc_id", "doc_title", "doc_text"]], on="doc_id", how="left", validate="many_to_one")
    missing = merged["doc_text"].isna()
    if missing.any():
        some = ", ".join(merged.loc[missing, "doc_id"].drop_duplicates().head(5))
        raise DataError(f"{path}: {int(missing.sum())} pair(s) name a doc_id not in {documents} (e.g. {some})")
    return merged


def write_table(df, path: str | Path) -> Path:
    """Write by extension (parquet, CSV, JSONL), atomically: a reader never sees half a file."""
    from serm.files import atomic_write

    name = Path(path).name.lower()
    if name.endswith((".parquet", ".pq")):
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    if name.endswith(".csv"):
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    if name.endswith((".jsonl", ".ndjson")):
        return atomic_write(path, lambda tmp: df.to_json(tmp, orient="records", lines=True, force_ascii=False))
    raise DataError(f"{path}: unknown output format; use .parquet, .csv or .jsonl")
