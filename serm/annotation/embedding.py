"""`embedding`: cosine similarity of bi-encoder embeddings (the packaged all-MiniLM-L6-v2,
mean pooling, offline) between the query and the document's best window, mapped to a grade."""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from typing import Literal

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import (AnnotationAgent, AnnotationContext, grade_from_thresholds, labelled_token,
                                  pair_rng, perturb, votes_frame)
from serm.annotation.calibration import fit_by_locale, labelled_pairs


@functools.lru_cache(maxsize=2)
def _encoder(model_name: str):
    """(tokenizer, encoder), loaded once per process: a miner and two annotators embed each round."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from serm.model.builtin import resolve_base

    hf_logging.disable_progress_bar()
    src = resolve_base(model_name)
    return AutoTokenizer.from_pretrained(src), AutoModel.from_pretrained(src).eval()


@functools.lru_cache(maxsize=4)
def _fast_encoder(model_name: str, int8: bool):
    """The encoder's fast forward (`fast_bert.BertScorer` over a bare BertModel), int8 if asked
    and available; None for other architectures (the HF forward is used)."""
    from serm.model.fast_bert import BertScorer, int8_available

    return BertScorer.for_encoder(_encoder(model_name)[1], int8=int8 and int8_available())


#: Embeddings kept per process, by (model, precision, max_length, text): the labelled pairs the
#: learned calibration embeds are the same every round, and the tuning's held-out pairs, the
#: votes and the miner's novelty agent embed many of the same queries and windows. ~75 MB full.
_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
CACHE_SIZE = 50_000


def embed(texts: list[str], model_name: str = "builtin:minilm-l6", batch_size: int = 64, max_length: int = 256,
          precision: str = "fp32"):
    """L2-normalised mean-pooled embeddings from a HF encoder (offline for builtin models).
    Texts are tokenized once, sorted by token count and padded per batch to their own longest
    (a Thai or Chinese query runs to many more word pieces than its character count suggests).
    A BERT encoder runs through SERM's fast forward; `precision="int8"` quantizes its linear
    layers as `model.precision: int8` does the cross-encoder's (CPU). Each distinct text is
    embedded once per process (`CACHE_SIZE` most recent kept): a repeated text, in this call or
    an earlier one, is read back, not encoded again."""
    import numpy as np

    tok, model = _encoder(model_name)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not len(texts):
        return out
    key = (model_name, precision, max_length)
    rows: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        rows.setdefault(t, []).append(i)
    missing = []
    for t, idx in rows.items():
        v = _CACHE.get((*key, t))
        if v is None:
            missing.append(t)
        else:
            _CACHE.move_to_end((*key, t))
            out[idx] = v
    if missing:
        vecs = _encode(missing, tok, model, model_name, batch_size, max_length, precision)
        for t, v in zip(missing, vecs):
            out[rows[t]] = v
            _CACHE[(*key, t)] = v.copy()
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out


def pair_cosine(queries, titles, texts, model_name: str = "builtin:minilm-l6", max_length: int = 256):
    """Cosine of each query's and its whole document's (`title text`) embeddings, each distinct
    text embedded once: the `bi_encoder` baseline's score and the relevance model's
    `embedding_cosine` head feature."""
    import numpy as np

    queries = list(queries)
    if not queries:
        return np.zeros(0, dtype=np.float32)
    from serm.model.passages import whole_document

    docs = [whole_document(t, x) for t, x in zip(titles, texts)]
    distinct = sorted(set(queries) | set(docs))
    vec = embed(distinct, model_name, max_length=max_length)
    row = {t: i for i, t in enumerate(distinct)}
    return (vec[[row[t] for t in queries]] * vec[[row[t] for t in docs]]).sum(axis=1).astype(np.float32)


def _encode(texts, tok, model, model_name, batch_size, max_length, precision):
    import numpy as np
    import torch

    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    fast = _fast_encoder(model_name, precision == "int8") if tok.padding_side == "right" else None
    enc = tok(list(texts), truncation=True, max_length=max_length)
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            b = tok.pad({k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt")
            if fast is not None:
                h = fast(b["input_ids"], b.get("token_type_ids"), b["attention_mask"].sum(1))
            else:
                h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(v, dim=-1).numpy()
    return out


class EmbeddingJudge(AnnotationAgent):
    name = "embedding"

    class Params(AgentParams):
        model: str = "builtin:minilm-l6"
        samples: int = Field(3, ge=1, le=20)
        perturbation: float = Field(0.15, ge=0.0, lt=1.0)
        thresholds: tuple[float, float, float] = Field(
            (0.25, 0.4, 0.55), description="[t1, t2, t3] on the cosine (calibration: fixed)")
        calibration: Literal["fixed", "learned"] = Field(
            "fixed", description="learned: fit the thresholds on the labelled pairs every round "
            "(serm.annotation.calibration)")
        window_words: int = Field(64, ge=8)

    def cache_token(self, ctx: AnnotationContext) -> str:
        return labelled_token(ctx) if self.params.calibration == "learned" else ""

    def cosines(self, pairs):
        """Cosine of each pair's query and its document's best window (unperturbed)."""
        from serm.model.passages import model_inputs

        docs = model_inputs(pairs["query"].tolist(), pairs["doc_title"].tolist(), pairs["doc_text"].tolist(),
                            "best_window", self.params.window_words)
        vecs = embed(pairs["query"].tolist() + docs, self.params.model)
        return (vecs[:len(pairs)] * vecs[len(pairs):]).sum(axis=1)

    def learn(self, ctx: AnnotationContext):
        """The score -> grade mapping fitted on the context's labelled pairs."""
        labelled = labelled_pairs(ctx)
        return fit_by_locale(self.cosines(labelled), labelled["grade"].astype(int).to_numpy(),
                             labelled["locale"].astype(str).to_numpy())

    def vote(self, ctx: AnnotationContext):
        import numpy as np

        from serm.model.passages import model_inputs

        p = self.params
        cal = self.learn(ctx) if p.calibration == "learned" else None
        t0 = time.perf_counter()
        pairs = ctx.pairs.reset_index(drop=True)
        queries = []
        for r in pairs.itertuples(index=False):
            rng = pair_rng(ctx.seed, 7, r.query_id, r.doc_id)
            queries.append([r.query] + [perturb(r.query, p.perturbation, rng) for _ in range(p.samples - 1)])
        docs = model_inputs(pairs["query"].tolist(), pairs["doc_title"].tolist(), pairs["doc_text"].tolist(),
                            "best_window", p.window_words)
        flat = [q for qs in queries for q in qs]
        vecs = embed(flat + docs, p.model)
        qv, dv = vecs[: len(flat)], vecs[len(flat):]
        per_pair_ms = (time.perf_counter() - t0) * 1000 / max(1, len(flat))
        rows = []
        for i, r in enumerate(pairs.itertuples(index=False)):
            for s in range(p.samples):
                sim = float(qv[i * p.samples + s] @ dv[i])
                thresholds = p.thresholds if cal is None else cal.for_locale(r.locale).thresholds
                note = f"; {cal.describe(r.locale)}" if cal is not None and s == 0 else ""
                rows.append((r.query_id, r.doc_id, self.name, s, grade_from_thresholds(sim, thresholds),
                             f"cosine {sim:.3f}{note}", round(per_pair_ms, 2), 0, 0.0))
        return votes_frame(rows)
