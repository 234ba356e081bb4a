"""`long_queries`: pairs of the longest queries of the batch, whatever the model says. Model-free,
so it can also choose what the model scores (`mining.prefilter`)."""

from __future__ import annotations

from pydantic import Field

from serm.agents import AgentParams
from serm.mining.base import MiningAgent, MiningContext, Picks


class LongQueries(MiningAgent):
    name = "long_queries"
    needs_model = False

    class Params(AgentParams):
        min_words: int = Field(6, ge=1, description="queries with at least this many words")

    def _words(self, ctx: MiningContext):
        import numpy as np

        return np.array([len(str(q).split()) for q in ctx.pairs["query"]])

    def flag(self, ctx: MiningContext):
        return self._words(ctx) >= self.params.min_words

    def select(self, ctx: MiningContext) -> Picks:
        import numpy as np

        words = self._words(ctx)
        idx = np.flatnonzero(words >= self.params.min_words)
        return Picks(idx, words[idx].astype(float), [f"query has {words[i]} words" for i in idx],
                     {"long_pairs": int(len(idx))})
