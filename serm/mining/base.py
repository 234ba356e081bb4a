"""The miner agent interface.

An agent looks at the round's `MiningContext` and returns the pairs it picks, each with a
priority score and a human-readable reason. The context holds the stream pairs (with their
Feast pair features), the batch's impressions, the queries the production model was trained on,
the model versions the miner may score with, and the production model's grade probabilities,
computed once per round by the miner and shared by every agent (`serm.mining.combine.mine`).

Agents whose signal needs no relevance score (`needs_model = False`) also implement `flag`:
their model-free criterion over every stream pair. `mining.prefilter` uses those flags to choose
which pairs the model scores at all; rows it does not score have NaN in `proba` and `score`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from serm.agents import Agent


@dataclass
class ModelVersions:
    """Model versions the miner may score with, loaded on demand and at most once.

    `loaders` maps a version number to a zero-argument function returning a model with
    `score_frame(pairs) -> (n, 4) proba` (a `RelevanceModel`); `production` is the version
    serving now. The stage builds it from the workspace; tests hand in their own loaders.
    """

    production: int
    loaders: dict[int, Callable[[], object]]
    _loaded: dict[int, object] = field(default_factory=dict, init=False, repr=False)

    def load(self, version: int):
        if version not in self._loaded:
            self._loaded[version] = self.loaders[version]()
        return self._loaded[version]

    def resolve(self, names: list[str]) -> list[int]:
        """`production`, `previous` (newest version older than production) or `vN` → versions
        that exist, in the given order, without repeats."""
        older = sorted((v for v in self.loaders if v < self.production), reverse=True)
        out: list[int] = []
        for name in names:
            v = {"production": self.production, "previous": older[0] if older else None}.get(name)
            if v is None and name.startswith("v") and name[1:].isdigit():
                v = int(name[1:])
            if v is not None and v in self.loaders and v not in out:
                out.append(v)
        return out


@dataclass
class MiningContext:
    pairs: "object"   # DataFrame: query_id, doc_id, query, locale, doc_title, doc_text,
                      # impressions, clicks, mean_position, mean_dwell_s
    proba: "object" = None  # ndarray (n_pairs, 4): production model's P(grade | q, d); NaN rows
                            # were not scored; None until the miner scores (`mine` does it once)
    score: "object" = None  # ndarray (n_pairs,): expected grade (NaN where not scored)
    events: "object" = None  # DataFrame of the batch's impressions: query_id, doc_id, position,
                             # clicked (per event, for click models); None: use the pair aggregates
    reference_queries: list[str] = field(default_factory=list)  # the production model's training queries
    models: ModelVersions | None = None
    shared: dict = field(default_factory=dict)  # per-round results an agent computes once and
                                                # reuses between `flag` and `select`, keyed by agent

    @property
    def scored(self):
        """Boolean mask of the pairs the production model scored this round."""
        import numpy as np

        return ~np.isnan(self.score)


@dataclass
class Picks:
    index: "object"    # ndarray of row positions into ctx.pairs
    priority: "object" # ndarray, higher = more informative, comparable within the agent
    reasons: list[str]
    stats: dict = field(default_factory=dict)  # what the agent saw and did, for the mining report


class MiningAgent(Agent):
    needs_model: bool = True  # False: the agent's `flag` needs no relevance score (prefilter-capable)

    @abstractmethod
    def select(self, ctx: MiningContext) -> Picks:
        """Return the picked rows of `ctx.pairs` (only rows with a score when `needs_model`)."""

    def flag(self, ctx: MiningContext):
        """Model-free criterion: boolean mask over `ctx.pairs` of the pairs this agent cares about."""
        raise NotImplementedError(f"{self.name} needs the model's scores and cannot pre-filter")
