"""The annotator agent interface.

An agent grades candidate pairs (0-3) and returns one vote per (pair, sample). A vote's grade
may be null: the agent abstains rather than guess. Deterministic agents produce their repeated
samples from perturbed inputs (query-token dropout) so level-1 agreement means something.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from serm import schema
from serm.agents import Agent

# tokens: prompt + completion tokens an API agent spent on the vote (0 for local agents);
# cost: its price in the currency of the agent's `price_per_1k_tokens` (0 for local agents).
VOTE_COLUMNS = list(schema.VOTE_COLUMNS)


#: The agent whose votes are reviewers' imported grades: they decide their pairs, outside the agreement.
HUMAN = "human"


@dataclass
class AnnotationContext:
    pairs: "object"      # DataFrame: query_id, doc_id, query, locale, doc_title, doc_text,
                         # impressions, clicks, mean_position, mean_dwell_s
    documents: "object"  # DataFrame: doc_id, title, text, locale (the corpus, for BM25 statistics)
    seed: int
    events: "object" = None    # the batch's impressions (query_id, doc_id, position, clicked), for
                               # click models; None: agents use the pair aggregates
    resolved: "object" = None  # human resolutions so far (query_id, doc_id, grade, reviewer, ...)
    models: Callable[[str], object] | None = None  # model reference (version "v3", directory) ->
                                                   # a loaded RelevanceModel, for the `teacher`
    truth: Callable[[str, str], int] | None = None  # simulation only: the hidden grade of a pair,
                                                    # for agents named as simulated (noisy_judge)
    labelled: "object" = None  # DataFrame of pairs with trusted grades (the seed set, human-reviewed
                               # pairs): query, doc_id, doc_title, doc_text, locale, grade; what
                               # `calibration: learned` agents fit their score -> grade mapping on


def labelled_token(ctx: "AnnotationContext") -> str:
    """A digest of the context's labelled pairs: part of a learned agent's vote-cache key, so
    votes are re-judged when new reviews change the mapping."""
    import hashlib

    frame = ctx.labelled
    if frame is None or not len(frame):
        return "labelled:none"
    keys = sorted(zip(frame["query"].astype(str), frame["doc_id"].astype(str), frame["grade"].astype(int)))
    return "labelled:" + hashlib.sha256(repr(keys).encode()).hexdigest()[:16]


def pair_rng(seed: int, salt: int, query_id: str, doc_id: str, *more: int):
    """A generator for one pair's samples, the same in every process (Python's `hash()` of a
    string is salted per process, so a resumed stage or another seed would not reproduce)."""
    import zlib

    import numpy as np

    return np.random.default_rng([seed, salt, *more, zlib.crc32(str(query_id).encode()),
                                  zlib.crc32(str(doc_id).encode())])


def grade_from_thresholds(value: float, thresholds) -> int:
    """thresholds [t1, t2, t3]: value >= t3 → 3, >= t2 → 2, >= t1 → 1, else 0."""
    return int(sum(value >= t for t in thresholds))


def perturb(query: str, share: float, rng) -> str:
    """Drop a random `share` of the query's words (at least one word stays)."""
    words = query.split()
    if share <= 0 or len(words) < 2:
        return query
    keep = rng.random(len(words)) >= share
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


#: Rationale prefix of a vote that failed in transport (timeout, refused, 5xx after retries):
#: an abstention that says nothing about the pair, so the vote cache does not keep it.
TRANSIENT = "transport error: "


def is_transient(rationale) -> bool:
    return isinstance(rationale, str) and rationale.startswith(TRANSIENT)


class AnnotationAgent(Agent):
    #: Params that cannot change a grade (timeouts, concurrency, ...): left out of the cache key.
    cache_ignore: frozenset[str] = frozenset()
    #: False: the agent's votes depend on state outside its params (the `human` agent's on
    #: imported grades), so they are never cached.
    cacheable: bool = True
    #: True: the agent grades from the batch's engagement (clicks), which labelled pairs lack;
    #: agreement tuning leaves it out of the votes on labelled pairs.
    uses_engagement: bool = False

    def cache_token(self, ctx: "AnnotationContext") -> str:
        """What else identifies this agent's judgments besides its params (a teacher: its
        weights). Part of the vote cache key."""
        return ""

    @abstractmethod
    def vote(self, ctx: AnnotationContext):
        """Return a DataFrame with VOTE_COLUMNS."""


def votes_frame(rows):
    import pandas as pd

    df = pd.DataFrame(rows, columns=VOTE_COLUMNS)
    df["grade"] = df["grade"].astype("Int8")
    df["tokens"] = df["tokens"].astype("int64")
    df["cost"] = df["cost"].astype("float64")
    return df
