"""The shipped XQuAD data (CC BY-SA 4.0, see `xquad/ATTRIBUTION.md`) as relevance judgments.

Each question's source paragraph is grade 3; every other paragraph of the same locale is a
non-answer (grade 0). Candidate lists hold the gold paragraph, hard negatives from the same
article and random negatives from other articles.
"""

from __future__ import annotations

from pathlib import Path

LOCALES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "zh")
DATA_DIR = Path(__file__).resolve().parent / "xquad"


def load_paragraphs():
    import pandas as pd

    return pd.read_parquet(DATA_DIR / "paragraphs.parquet")


def load_questions():
    """One row per (locale, question): query_id, query, locale, question_id, gold doc_id."""
    import pandas as pd

    cols = ["query_id", "query", "locale", "question_id", "doc_id", "doc_title"]
    return pd.read_parquet(DATA_DIR / "positives.parquet", columns=cols)


def documents():
    """Documents in the stream contract: doc_id, title, text, locale."""
    p = load_paragraphs()
    return p.rename(columns={"doc_title": "title", "doc_text": "text"})[["doc_id", "title", "text", "locale"]]


def split_question_ids(seed: int, test_queries: int, seed_queries: int) -> dict[str, list[str]]:
    """Partition language-independent question ids: held-out test ids are never trained on in
    any locale, so a translation of a test question cannot leak into training."""
    import numpy as np

    qids = sorted(load_questions()["question_id"].unique())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(qids))
    shuffled = [qids[i] for i in order]
    test = shuffled[:test_queries]
    seed_ids = shuffled[test_queries:test_queries + seed_queries]
    stream = shuffled[test_queries:]  # stream locales may see translations of seed questions
    return {"test": test, "seed": seed_ids, "stream": stream}


def candidate_lists(questions, paragraphs, hard_negatives: int, random_negatives: int, seed: int):
    """Judged candidate pairs for the given questions (same locale only).

    Returns a DataFrame in the canonical judgments format plus `question_id`:
    query_id, query, doc_id, doc_title, doc_text, grade, locale, question_id.
    """
    import numpy as np
    import pandas as pd

    rows = []
    by_locale = {loc: df.reset_index(drop=True) for loc, df in paragraphs.groupby("locale")}
    for q in questions.itertuples(index=False):
        paras = by_locale[q.locale]
        rng = np.random.default_rng([seed, int(q.question_id[-6:], 16)])
        same = paras.index[(paras.doc_title == q.doc_title) & (paras.doc_id != q.doc_id)].to_numpy()
        other = paras.index[paras.doc_title != q.doc_title].to_numpy()
        picked = [(paras.index[paras.doc_id == q.doc_id][0], 3)]
        picked += [(i, 0) for i in rng.choice(same, min(hard_negatives, len(same)), replace=False)]
        picked += [(i, 0) for i in rng.choice(other, min(random_negatives, len(other)), replace=False)]
        for idx, grade in picked:
            p = paras.loc[idx]
            rows.append((q.query_id, q.query, p.doc_id, p.doc_title, p.doc_text, grade, q.locale, q.question_id))
    cols = ["query_id", "query", "doc_id", "doc_title", "doc_text", "grade", "locale", "question_id"]
    out = pd.DataFrame(rows, columns=cols)
    out["grade"] = out["grade"].astype("int8")
    return out


def gold_pairs() -> set[tuple[str, str]]:
    """All (query_id, doc_id) pairs with grade 3: the hidden truth of the simulation."""
    q = load_questions()
    return set(zip(q.query_id, q.doc_id))
