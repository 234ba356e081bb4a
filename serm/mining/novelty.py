"""`novelty`: queries unlike anything the production model was trained on.

Queries are embedded with the packaged MiniLM (mean pooling, offline; the embedder of the
`embedding` annotator). A query's novelty is its mean cosine distance to its `k` nearest
reference queries (the production model's training queries); the threshold is the `quantile`
of the same distance computed on the reference itself, each reference query leaving itself
out, so "novel" means "farther out than all but (1 - quantile) of the training queries are".
For each novel query the agent picks its `docs_per_query` best-placed documents (what users
saw first). No relevance score is needed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serm.agents import AgentParams
from serm.mining.base import MiningAgent, MiningContext, Picks


def knn_distance(queries, reference, k: int, leave_one_out: bool = False):
    """Mean cosine distance of each row of `queries` to its `k` nearest rows of `reference`
    (both L2-normalised). With `leave_one_out`, `queries` is `reference` and a row never counts
    itself."""
    import numpy as np

    sim = queries @ reference.T
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    k = min(k, reference.shape[0] - (1 if leave_one_out else 0))
    nearest = -np.partition(-sim, k - 1, axis=1)[:, :k]
    return (1.0 - nearest).mean(axis=1)


class Novelty(MiningAgent):
    name = "novelty"
    needs_model = False

    class Params(AgentParams):
        k: int = Field(10, ge=1, le=1000, description="nearest reference queries to average over")
        quantile: float = Field(0.95, gt=0.0, lt=1.0, description="threshold: this quantile of the "
                                "reference's own (leave-one-out) kNN distances")
        docs_per_query: int = Field(2, ge=1, le=100, description="pairs picked per novel query, best-placed first")
        model: str = "builtin:minilm-l6"
        precision: Literal["fp32", "int8"] = Field("fp32", description="the query embedder's CPU precision "
                                                   "(int8: ~3x faster on 2 cores, cosine > 0.99 to fp32's)")

    def distances(self, ctx: MiningContext):
        """(distance per pair row, threshold, reference size), computed once per context."""
        key = str(self)
        if key not in ctx.shared:
            import numpy as np

            from serm.annotation.embedding import embed

            ref = sorted(set(ctx.reference_queries))
            queries = ctx.pairs["query"].to_numpy()
            if len(ref) < 2:
                ctx.shared[key] = (np.zeros(len(queries)), np.inf, len(ref))
                return ctx.shared[key]
            uniq, inverse = np.unique(queries, return_inverse=True)
            vecs = embed(ref + uniq.tolist(), self.params.model, max_length=64,   # queries are short
                         precision=self.params.precision)
            rv, qv = vecs[: len(ref)], vecs[len(ref):]
            threshold = float(np.quantile(knn_distance(rv, rv, self.params.k, leave_one_out=True), self.params.quantile))
            ctx.shared[key] = (knn_distance(qv, rv, self.params.k)[inverse], threshold, len(ref))
        return ctx.shared[key]

    def flag(self, ctx: MiningContext):
        import numpy as np

        dist, threshold, _ = self.distances(ctx)
        novel = dist > threshold
        pos = ctx.pairs["mean_position"].fillna(np.inf).to_numpy()
        frame = ctx.pairs[["query_id"]].reset_index(drop=True).assign(pos=pos, novel=novel)
        rank = frame[novel].sort_values("pos", kind="stable").groupby("query_id", sort=False).cumcount()
        out = np.zeros(len(frame), dtype=bool)
        out[rank.index[rank.to_numpy() < self.params.docs_per_query]] = True
        return out

    def select(self, ctx: MiningContext) -> Picks:
        import numpy as np

        dist, threshold, n_ref = self.distances(ctx)
        idx = np.flatnonzero(self.flag(ctx))
        p = self.params
        pos = ctx.pairs["mean_position"].to_numpy()
        reasons = [f"query kNN distance {dist[i]:.3f} > {threshold:.3f} (q{p.quantile:g} of the {n_ref} training "
                   f"queries, k={p.k}); shown at rank {pos[i]:.0f}" for i in idx]
        novel_queries = int(ctx.pairs.loc[dist > threshold, "query_id"].nunique())
        stats = {"reference_queries": n_ref, "threshold": None if not np.isfinite(threshold) else round(threshold, 4),
                 "novel_queries": novel_queries, "queries": int(ctx.pairs["query_id"].nunique())}
        return Picks(idx, dist[idx], reasons, stats)
