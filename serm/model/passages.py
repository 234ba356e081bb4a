"""What text the cross-encoder sees for a (query, document) pair.

XQuAD paragraphs run ~200 tokens; a 128-token cross-encoder that reads only the head of a
paragraph cannot see an answer in its second half. `best_window` feeds the window of
`window_words` words with the most query-term overlap (a query-biased snippet) instead.

This file needs nothing but the standard library: `serm export` copies it next to an exported
model as `serm_preprocess.py`, so a serving stack prepares documents exactly as training did.

    >>> document("who won?", "Super_Bowl_50", "The Broncos won.", window_words=96)
    'Super Bowl 50: The Broncos won.'
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+", re.UNICODE)


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


def model_inputs(queries, titles, texts, passage: str, window_words: int) -> list[str]:
    """Document side of each pair."""
    return [document(q, title, text, window_words, passage) for q, title, text in zip(queries, titles, texts)]
