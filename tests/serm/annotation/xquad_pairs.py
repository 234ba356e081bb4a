"""Labelled English XQuAD candidate lists for the annotation tests (the shipped data)."""

from serm.data import xquad


def english_splits(first: int, second: int, seed: int = 2):
    """(candidate lists of the first `first` English questions, of the next `second`, the
    documents): the gold paragraph, 2 hard negatives and 3 random ones per question."""
    q, paras = xquad.load_questions(), xquad.load_paragraphs()
    en = q[q.locale == "en"]
    a = xquad.candidate_lists(en.head(first), paras, 2, 3, seed=seed)
    b = xquad.candidate_lists(en.iloc[first:first + second], paras, 2, 3, seed=seed)
    return a, b, xquad.documents()
