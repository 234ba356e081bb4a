"""What text the cross-encoder sees for a (query, document) pair.

XQuAD paragraphs run ~200 tokens; a 128-token cross-encoder that reads only the head of a
paragraph cannot see an answer in its second half. `best_window` feeds the window of
`window_words` words with the most query-term overlap (a query-biased snippet) instead.

`lexical_features` are the pair's corpus-free lexical evidence over the whole document (not only
the window the network reads): how much of the query occurs in it, as words and as character
trigrams (which need no word boundaries: Chinese and Thai have none). They need no corpus
statistics, so they mean the same in a language no training pair was in; the relevance model's
lexical head learns how much to trust them (`serm.model.lexical`).

This file needs nothing but the standard library: `serm export` copies it next to an exported
model as `serm_preprocess.py`, so a serving stack prepares documents exactly as training did.

    >>> document("who won?", "Super_Bowl_50", "The Broncos won.", window_words=96)
    'Super Bowl 50: The Broncos won.'
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

_TOKEN = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+", re.UNICODE)
#: Names of `lexical_features`, in the order a model's lexical head stores its weights.
LEXICAL_FEATURES = ("term_coverage", "weighted_term_coverage", "char3_coverage")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def best_window(query: str, text: str, window_words: int) -> str:
    words = text.split()
    if len(words) <= window_words:
        return text
    qset = set(tokens(query))
    hits = [1 if (set(tokens(w)) & qset) else 0 for w in words]
    stride = max(1, window_words // 2)
    best_start, best = 0, -1
    for start in range(0, len(words) - window_words + stride, stride):
        score = sum(hits[start:start + window_words])
        if score > best:
            best_start, best = start, score
    return " ".join(words[best_start:best_start + window_words])


def document(query: str, title: str, text: str, window_words: int, passage: str = "best_window") -> str:
    """The document side of one pair: `title: passage` (`_` in a title read as a space)."""
    title = (title or "").replace("_", " ")
    text = text or ""
    if passage == "best_window":
        text = best_window(query, text, window_words)
    return f"{title}: {text}" if title else text


def whole_document(title: str, text: str) -> str:
    """`title text` (`_` in a title read as a space): what the lexical features, BM25 and the
    bi-encoder read of a document.

    >>> whole_document("Super_Bowl_50", "The Broncos won.")
    'Super Bowl 50 The Broncos won.'
    """
    return f"{(title or '').replace('_', ' ')} {text or ''}".strip()


def model_inputs(queries, titles, texts, passage: str, window_words: int) -> list[str]:
    """Document side of each pair."""
    return [document(q, title, text, window_words, passage) for q, title, text in zip(queries, titles, texts)]


@lru_cache(maxsize=2048)
def _profile(text: str) -> tuple[frozenset, frozenset]:
    """Distinct lower-cased \\w+ tokens and character trigrams of a text (cached: a document
    appears in many pairs; an XQuAD paragraph's sets take ~70 KB, so the cache stays ~150 MB)."""
    low = _SPACE.sub(" ", text.lower()).strip()
    return frozenset(_TOKEN.findall(low)), frozenset(low[i:i + 3] for i in range(len(low) - 2))


def lexical_features(query: str, title: str, text: str, names=LEXICAL_FEATURES) -> list[float]:
    """The named features of one pair, each in [0, 1]; the document is `title text`.

    - term_coverage: share of the query's distinct words found in the document;
    - weighted_term_coverage: the same, each word weighted by log(1 + its length) (short words
      are the frequent ones in most languages: a corpus-free stand-in for IDF);
    - char3_coverage: share of the query's distinct character trigrams found in the document.

    >>> [round(f, 3) for f in lexical_features("who won", "", "The Broncos won.")]
    [0.5, 0.5, 0.4]
    """
    q_words, q_grams = _profile(query or "")
    d_words, d_grams = _profile(whole_document(title, text))
    out = []
    for name in names:
        if name == "term_coverage":
            out.append(len(q_words & d_words) / len(q_words) if q_words else 0.0)
        elif name == "weighted_term_coverage":
            # fsum is correctly rounded, so the value does not depend on the sets' iteration
            # order (which changes with PYTHONHASHSEED from one process to the next)
            total = math.fsum(math.log1p(len(w)) for w in q_words)
            out.append(math.fsum(math.log1p(len(w)) for w in q_words & d_words) / total if total else 0.0)
        elif name == "char3_coverage":
            out.append(len(q_grams & d_grams) / len(q_grams) if q_grams else 0.0)
        else:
            raise ValueError(f"unknown lexical feature {name!r}; known: {', '.join(LEXICAL_FEATURES)}")
    return out
