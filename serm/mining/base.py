"""The miner agent interface.

An agent looks at the round's `MiningContext` (stream pairs with their Feast pair features and
the model's grade probabilities, computed once per round and shared by every agent) and returns
the pairs it picks, each with a priority score and a human-readable reason.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from serm.agents import Agent


@dataclass
class MiningContext:
    pairs: "object"   # DataFrame: query_id, doc_id, query, locale, doc_title, doc_text,
                      # impressions, clicks, mean_position, mean_dwell_s
    proba: "object"   # ndarray (n_pairs, 4): production model's P(grade | q, d)
    score: "object"   # ndarray (n_pairs,): expected grade


@dataclass
class Picks:
    index: "object"    # ndarray of row positions into ctx.pairs
    priority: "object" # ndarray, higher = more informative, comparable within the agent
    reasons: list[str]


class MiningAgent(Agent):
    @abstractmethod
    def select(self, ctx: MiningContext) -> Picks:
        """Return the picked rows of `ctx.pairs`."""
