"""The simulated world of the default run: which XQuAD questions are the seed set, the test
sets and each stream batch, and the hidden truth. Everything the pipeline sees of it goes
through the stream contract; hidden grades reach only the seed set, the test sets and the
budgeted (simulated) human reviewer."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def _world(seed: int, test_queries: int, seed_queries: int):
    from serm.data import xquad

    return xquad.load_questions(), xquad.load_paragraphs(), xquad.split_question_ids(seed, test_queries, seed_queries)


def seed_set(policy):
    """Gold-graded candidate lists of the seed locale's seed questions."""
    from serm.data import xquad

    d = policy.data
    q, p, split = _world(policy.seed, d.test_queries, d.seed_queries)
    qs = q[(q.locale == d.seed_locale) & q.question_id.isin(split["seed"])]
    return xquad.candidate_lists(qs, p, d.candidates.hard_negatives, d.candidates.random_negatives, policy.seed)


def test_sets(policy):
    """Held-out test questions in the seed locale and every stream locale (canonical format)."""
    from serm.data import xquad

    d = policy.data
    q, p, split = _world(policy.seed, d.test_queries, d.seed_queries)
    locales = [d.seed_locale, *d.stream_locales]
    qs = q[q.locale.isin(locales) & q.question_id.isin(split["test"])]
    return xquad.candidate_lists(qs, p, d.candidates.hard_negatives, d.candidates.random_negatives, policy.seed)


def batch_plan(policy, batch_no: int) -> tuple[str, int]:
    """Batch b brings locale stream_locales[(b-1) % L], chunk (b-1) // L of its questions."""
    locs = policy.data.stream_locales
    return locs[(batch_no - 1) % len(locs)], (batch_no - 1) // len(locs)


def batch_candidates(policy, batch_no: int):
    """The stream batch's queries with their candidate documents (hidden grades included)."""
    from serm.data import xquad

    d = policy.data
    q, p, split = _world(policy.seed, d.test_queries, d.seed_queries)
    locale, chunk = batch_plan(policy, batch_no)
    stream_ids = split["stream"]
    qs = q[(q.locale == locale) & q.question_id.isin(stream_ids)]
    qs = qs.set_index("question_id").loc[[i for i in stream_ids if i in set(qs.question_id)]].reset_index()
    qs = qs.iloc[chunk * d.queries_per_batch:(chunk + 1) * d.queries_per_batch]
    if qs.empty:
        return None
    return xquad.candidate_lists(qs, p, d.candidates.hard_negatives, d.candidates.random_negatives, policy.seed)


def hidden_grade(policy):
    """`(query_id, doc_id) -> grade` of the hidden truth (3 for a question's paragraph, else 0)."""
    gold = oracle(policy)
    return lambda query_id, doc_id: 3 if (query_id, doc_id) in gold else 0


def oracle(policy) -> set[tuple[str, str]]:
    from serm.data import xquad

    return xquad.gold_pairs()
