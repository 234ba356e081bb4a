"""Per-query descriptors the drift detectors compare: the numeric features of a query's text
(`query_frame`, over the `tokens` of a query and the reference's `vocabulary`) and the
out-of-fold classifier scores that reduce query embeddings to one number per query
(`embedding_scores`). Only numbers reach Evidently, never raw text (text drift is ~20x slower
there)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text) -> list[str]:
    """Lowercase `\\w+` tokens of a text, in order, repeats kept."""
    return _TOKEN.findall(str(text).lower())


def vocabulary(texts: Iterable[str]) -> dict[str, int]:
    """The tokens of `texts` with their document frequency (number of texts containing them).

    It behaves as the set of known tokens (`token in vocab`); the counts let `query_frame`
    compute a leave-one-out unseen share for the reference itself."""
    from collections import Counter

    df: Counter = Counter()
    for t in texts:
        df.update(set(tokens(t)))
    return dict(df)


def query_frame(queries, reference_vocab: Mapping[str, int] | set[str], leave_one_out: bool = False):
    """`queries` (a DataFrame with at least `query`) plus numeric descriptors per query:

    - query_chars: characters in the query;
    - query_tokens: number of lowercase `\\w+` tokens;
    - unseen_token_share: share of those tokens not in `reference_vocab` (0 when no tokens);
    - non_ascii_share: share of non-ASCII characters (0 for an empty query).

    `reference_vocab` is `vocabulary(reference_queries)` (or any set of tokens). Pass
    `leave_one_out=True` when describing the reference queries themselves: a token then counts
    as unseen when no *other* reference query has it, so the reference's unseen share is an
    honest baseline instead of a constant 0 (that needs the counts from `vocabulary`)."""
    if leave_one_out and not isinstance(reference_vocab, Mapping):
        raise TypeError("leave_one_out needs document frequencies: pass vocabulary(texts), not a set")
    if "query" not in queries.columns:
        from serm.errors import DataError

        raise DataError(f"query_frame: the frame has no 'query' column (columns: {', '.join(map(str, queries.columns))})")
    out = queries.copy()
    texts = out["query"].fillna("").astype(str).tolist()
    toks = [tokens(s) for s in texts]
    if isinstance(reference_vocab, Mapping):
        def seen(word: str, own: set[str]) -> bool:
            return reference_vocab.get(word, 0) - (1 if leave_one_out and word in own else 0) > 0
    else:
        def seen(word: str, own: set[str]) -> bool:
            return word in reference_vocab
    unseen = []
    for tk in toks:
        own = set(tk)
        unseen.append(sum(not seen(w, own) for w in tk) / len(tk) if tk else 0.0)
    out["query_chars"] = [float(len(s)) for s in texts]
    out["query_tokens"] = [float(len(tk)) for tk in toks]
    out["unseen_token_share"] = unseen
    out["non_ascii_share"] = [sum(ord(c) > 127 for c in s) / len(s) if s else 0.0 for s in texts]
    return out


def embedding_scores(ref_vec, cur_vec, seed: int = 0):
    """Out-of-fold scores of a logistic regression telling current (1) from reference (0)
    rows, with 2-fold cross-fitting on standardised embeddings: (reference scores, current
    scores, their ROC AUC). No row is scored by a model that saw it."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(np.vstack([ref_vec, cur_vec]).astype(np.float64))
    y = np.r_[np.zeros(len(ref_vec)), np.ones(len(cur_vec))]
    fold = np.random.default_rng(seed).permutation(len(X)) % 2
    scores = np.zeros(len(X))
    for f in (0, 1):
        train, test = fold != f, fold == f
        if len(set(y[train])) < 2:  # a tiny batch all in one fold: nothing to learn from
            continue
        clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(X[train], y[train])
        scores[test] = clf.decision_function(X[test])
    return scores[: len(ref_vec)], scores[len(ref_vec):], float(roc_auc_score(y, scores))
