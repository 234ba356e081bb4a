"""Reference rankers over the same candidates as the relevance model: what a model must beat to
be worth deploying.

- `bm25`: BM25 (bm25s, k1 1.2, b 0.75, no stopwords, the lexical agent's tokenizer) with IDF over
  the locale's document catalogue (the test's own documents where the catalogue lacks them);
- `bi_encoder`: cosine of the off-the-shelf all-MiniLM-L6-v2 embeddings (the packaged builtin,
  mean pooling) of the query and of `title text` (the whole document).

They give rankings, not grades: only ranking metrics (NDCG@k) are reported for them. Neither
depends on the model, so a round computes them once per test set and keeps them with the
round's metrics (`metrics.json`, `baselines`).
"""

from __future__ import annotations

BASELINES = ("bm25", "bi_encoder")


def bm25_scores(judgments, documents=None, k1: float = 1.2, b: float = 0.75):
    """BM25 of each judgment's document for its query (judgments: query, doc_id, doc_title,
    doc_text, locale; documents: doc_id, title, text, locale)."""
    import bm25s
    import numpy as np
    import pandas as pd

    from serm.model.passages import whole_document

    out = np.zeros(len(judgments), dtype=np.float32)
    if not len(judgments):
        return out
    j = judgments.reset_index(drop=True)
    locale = j["locale"] if "locale" in j.columns else pd.Series([""] * len(j))
    own = pd.DataFrame({"doc_id": j["doc_id"], "title": j["doc_title"], "text": j["doc_text"]})
    catalogue = None if documents is None or not len(documents) else documents[["doc_id", "title", "text", "locale"]]
    for loc, rows in j.groupby(locale, sort=False):
        # the locale's catalogue, plus any judged document it lacks (the judgment's text wins)
        parts = [own.loc[rows.index]]
        if catalogue is not None:
            parts.append(catalogue.loc[catalogue["locale"] == loc, ["doc_id", "title", "text"]])
        docs = pd.concat(parts, ignore_index=True).drop_duplicates("doc_id").reset_index(drop=True)
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(bm25s.tokenize([whole_document(t, x) for t, x in zip(docs["title"], docs["text"])],
                                       stopwords=None, show_progress=False),
                        show_progress=False)
        pos = {d: i for i, d in enumerate(docs["doc_id"])}
        for query, part in rows.groupby("query", sort=False):
            toks = bm25s.tokenize([query], stopwords=None, show_progress=False, return_ids=False)[0]
            if not toks:
                continue
            scores = retriever.get_scores(toks)
            out[part.index.to_numpy()] = [scores[pos[d]] for d in part["doc_id"]]
    return out


def bi_encoder_scores(judgments, model_name: str = "builtin:minilm-l6"):
    """Cosine of the query's and the document's embeddings (each distinct text embedded once;
    `serm.annotation.embedding.pair_cosine`)."""
    from serm.annotation.embedding import pair_cosine

    return pair_cosine(judgments["query"], judgments["doc_title"], judgments["doc_text"], model_name)


SCORERS = {"bm25": bm25_scores, "bi_encoder": lambda j, documents=None: bi_encoder_scores(j)}


def baseline_metrics(sets: dict, documents=None, ks=(4, 10), locales: dict | None = None) -> dict:
    """`{baseline: {test set: ranking metrics}}` for the named test sets (judgments each)."""
    from serm.evaluation import ranking_metrics

    out: dict = {}
    for name, scorer in SCORERS.items():
        out[name] = {}
        for test, judgments in sets.items():
            if not len(judgments):
                out[name][test] = {"pairs": 0, "queries": 0}
                continue
            scored = judgments.assign(score=scorer(judgments, documents=documents))
            out[name][test] = {"pairs": int(len(judgments)), **ranking_metrics(scored, tuple(ks)),
                               **({"locale": locales[test]} if locales and test in locales else {})}
    return out
