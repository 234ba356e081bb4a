"""Scores a model gave to (query, document) pairs, kept so an unchanged pair is never scored twice
by the same model: a round's evaluate stage scores the candidate and production on the same test
sets every round, and production was last round's candidate.

A model is keyed by its weights and tokenizer files (not `lineage.json` / `metrics.json`, which
promotion rewrites), the scoring-relevant part of its `ModelSpec` and the device kind (bf16 on a
GPU scores differently from fp32 on a CPU); a pair by its query, title and text. The cache is
derived state: one parquet file per model key under `.serm/cache/scores/`, the newest
`KEEP_MODELS` kept. Losing it only costs a re-score.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from serm import schema
from serm.files import write_parquet

KEEP_MODELS = 4
SCORER_VERSION = 3   # bump when SERM changes how a pair becomes model input (passages, truncation) or
                     # how it is scored (2: int8 keeps the feed-forward outlier channels in fp32; 3: the
                     # lexical head's offset)
_SKIP = frozenset({schema.MODEL_LINEAGE, schema.MODEL_METRICS})
_SCORING_FIELDS = ("base_model", "max_length", "window_words", "passage", "precision")


def model_key(model_dir: Path, spec, device: str) -> str:
    """Identity of what a model's scores depend on."""
    from serm.versioning import tree_checksum

    h = hashlib.sha256(tree_checksum(model_dir, skip=_SKIP).encode())
    fields = {k: getattr(spec, k, None) for k in _SCORING_FIELDS}
    h.update(json.dumps({**fields, "device": str(device).split(":")[0], "scorer": SCORER_VERSION},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def pair_keys(frame) -> "object":
    """One key per row from query, doc_title and doc_text (a Series of str)."""
    import pandas as pd

    cols = frame[["query", "doc_title", "doc_text"]].fillna("").astype(str)
    hashed = pd.util.hash_pandas_object(cols, index=False, categorize=False)
    return hashed.astype("uint64").astype(str)


class ScoreCache:
    """`proba(frame, model_key, score)`: P(grade | pair) for every row, scoring only the rows
    this model key has not scored before (`score(sub_frame) -> (n, 4) array`)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = self.misses = 0

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.parquet"

    def load(self, key: str):
        import pandas as pd

        f = self._file(key)
        if not f.exists():
            return {}
        try:
            df = pd.read_parquet(f)
        except Exception:   # a damaged cache file is only a lost cache
            return {}
        return dict(zip(df["pair"], df[["p0", "p1", "p2", "p3"]].to_numpy()))

    def proba(self, frame, key: str, score):
        import numpy as np
        import pandas as pd

        keys = pair_keys(frame).to_numpy()
        known = self.load(key)
        missing = np.array([k not in known for k in keys], dtype=bool)
        self.hits += int((~missing).sum())
        self.misses += int(missing.sum())
        if missing.any():
            new_keys, first = np.unique(keys[missing], return_index=True)
            rows = np.flatnonzero(missing)[first]
            fresh = np.asarray(score(frame.iloc[rows]), dtype=np.float32)
            known.update(zip(new_keys, fresh))
            self.folder.mkdir(parents=True, exist_ok=True)
            table = np.stack(list(known.values())).astype(np.float32)
            out = pd.DataFrame({"pair": list(known.keys()), **{f"p{i}": table[:, i] for i in range(4)}})
            write_parquet(out, self._file(key))
            self._prune(keep=key)
        elif self._file(key).exists():
            os.utime(self._file(key))   # in use: the newest files are the ones kept
        return np.stack([known[k] for k in keys]).astype(np.float32) if len(keys) else np.zeros((0, 4), np.float32)

    def _prune(self, keep: str) -> None:
        files = sorted(self.folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime, reverse=True)
        for f in [f for f in files if f.stem != keep][KEEP_MODELS - 1:]:
            f.unlink(missing_ok=True)
