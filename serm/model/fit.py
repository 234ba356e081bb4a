"""`serm train`: fit a relevance model on a judgments file, outside the evolution loop.

Whole queries are sampled (`max_pairs`) and split into train and validation, so no query sits on
both sides; `train` fine-tunes with early stopping on the validation loss; the kept model is
evaluated on the validation queries and saved as a HF directory with `metrics.json` and
`lineage.json`, like a workspace version.

The validation metrics picked the best epoch, so they lean optimistic: for a fair number run
`serm evaluate` on queries the model never saw (`benchmarks/homedepot.py` does exactly that).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from serm import schema
from serm.errors import DataError


def sample_queries(df, max_pairs: int | None, seed: int):
    """Whole queries in a seeded random order, as many as fit in `max_pairs` pairs (at least one)."""
    import numpy as np

    if not max_pairs or len(df) <= max_pairs:
        return df
    sizes = df.groupby("query_id", sort=True).size()
    order = np.random.default_rng([seed, 1]).permutation(len(sizes))
    shuffled = sizes.iloc[order]
    keep = shuffled.index[shuffled.cumsum() <= max_pairs]
    if len(keep) == 0:
        keep = sizes.index[order[:1]]
    return df[df["query_id"].isin(set(keep))]


def split_queries(df, share: float, seed: int):
    """(train, held_out): a seeded `share` of the queries held out whole; none when `share` is 0
    or there is a single query; otherwise at least one query on each side."""
    import numpy as np

    qids = np.array(sorted(df["query_id"].unique()))
    n = int(round(len(qids) * share))
    if share > 0 and len(qids) >= 2:
        n = min(max(n, 1), len(qids) - 1)
    else:
        n = 0
    held = set(qids[np.random.default_rng([seed, 2]).permutation(len(qids))[:n]])
    mask = df["query_id"].isin(held)
    return df[~mask], df[mask]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fit(judgments, source, model_spec, training_spec, out_dir: str | Path, *, seed: int,
        max_pairs: int | None = None, policy=None, data_path: str | Path | None = None,
        ks=(4, 10), overwrite: bool = False, log=print) -> dict:
    """Fine-tune the model `source` (a `serm.model.refs.ModelSource`) on `judgments` (canonical
    format) and save it to `out_dir`, replacing a model saved there only when `overwrite`.
    Returns the metrics written to `metrics.json`."""
    from serm.evaluation import evaluate
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import set_seed, train

    if len(judgments) == 0:
        raise DataError(f"{data_path or 'judgments'}: no rows to train on")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise DataError(f"{out_dir} already exists; choose another --out or pass --overwrite")
        if not (out_dir / schema.MODEL_CONFIG).is_file():
            raise DataError(f"{out_dir} is not a saved model directory (no config.json); "
                            f"refusing to overwrite it, choose another --out")
    used = sample_queries(judgments, max_pairs, seed)
    tr, val = split_queries(used, training_spec.validation_share, seed)
    log(f"[train] {len(tr)} pairs / {tr.query_id.nunique()} queries to train on, "
        f"{len(val)} pairs / {val.query_id.nunique()} held-out queries for early stopping; "
        f"base {source.describe()}")
    set_seed(seed)  # a fresh head on a base encoder starts from the same weights every run
    model = RelevanceModel.load(source.path, model_spec, device=training_spec.device)
    result = train(model, tr, training_spec, seed, log=log, validation=val if len(val) else None)
    validation = None
    if len(val):
        ev = evaluate(model, val, ks)
        validation = {**ev["overall"], "per_locale": ev["per_locale"]}
    metrics = {"validation": validation}
    lineage = {
        "version": None, "round": None,
        "parent": source.version if source.version is not None else source.ref,
        "base_model": source.ref,
        "policy_hash": policy.hash() if policy is not None else None,
        "policy": policy.name if policy is not None else None,
        "dataset": {"path": str(Path(data_path).resolve()) if data_path else None,
                    "sha256": file_sha256(data_path) if data_path else None,
                    "pairs": int(len(judgments)), "queries": int(judgments.query_id.nunique())},
        "trained_on": {"pairs": int(len(tr)), "queries": int(tr.query_id.nunique())},
        "validation": {"pairs": int(len(val)), "queries": int(val.query_id.nunique()),
                       "share": training_spec.validation_share},
        "seed": seed, "max_pairs": max_pairs,
        "training_spec": training_spec.model_dump(mode="json"),
        "training": result.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Save beside the target, then swap: an interrupted save never leaves half a model at `out_dir`.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    model.save(tmp, metrics=metrics, lineage=lineage)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return metrics
