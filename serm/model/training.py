"""Fine-tuning the relevance model: class-weighted cross-entropy over 4 grades, a validation
split with early stopping (the best epoch is kept), gradient accumulation, deterministic seeds,
bf16 autocast on GPU. A lexical head (`serm.model.lexical`) is fitted on the features first
when it is fresh, then trained with the network at its own learning rate."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from serm.errors import DataError


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    pairs: int = 0
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def set_seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _adamw(groups, lr: float):
    """AdamW with the fused kernel where this torch build has it: one pass over every parameter
    instead of a dozen elementwise ops per tensor (on 2 CPU cores, 12 ms a step against 80 ms for
    MiniLM-L6, whose word embedding (11.7M of its 22.7M parameters) gets a dense update every step)."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, fused=True)
    except (RuntimeError, TypeError, ValueError):    # an older torch, or a device it lacks a kernel for
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)


def train(model, examples, spec, seed: int, epochs: int | None = None, log=print,
          validation=None) -> TrainResult:
    """Fine-tune `model` (a RelevanceModel, in place) on `examples` with columns
    query, doc_title, doc_text, grade. Returns per-epoch losses; the best-validation epoch wins.

    Without `validation`, a random `spec.validation_share` of the pairs is held out (none under
    50 pairs). With `validation` (same columns), every example is trained on and `validation`
    alone picks the best epoch: callers that split by query pass their held-out queries here."""
    import numpy as np
    import torch

    from serm.model.cross_encoder import GRADES, pick_device
    from serm.model.passages import model_inputs

    if len(examples) == 0:
        raise DataError("no training examples: nothing was labelled for training")
    set_seed(seed)
    device = pick_device(spec.device)
    model.model.to(device)
    model.device = device
    epochs = epochs or spec.epochs
    rng = np.random.default_rng(seed)

    if validation is not None and len(validation):
        import pandas as pd

        cols = ["query", "doc_title", "doc_text", "grade"]
        n_train = len(examples)
        examples = pd.concat([examples[cols], validation[cols]], ignore_index=True)
        tr_idx, val_idx = np.arange(n_train), np.arange(n_train, len(examples))
        n_val = len(val_idx)
    else:
        order = rng.permutation(len(examples))
        n_val = int(len(examples) * spec.validation_share) if len(examples) >= 50 else 0
        val_idx, tr_idx = order[:n_val], order[n_val:]
    grades = examples["grade"].to_numpy().astype(np.int64)
    docs = model_inputs(examples["query"].tolist(), examples["doc_title"].tolist(),
                        examples["doc_text"].tolist(), model.spec.passage, model.spec.window_words)
    enc = model.encode(examples["query"].tolist(), docs)

    weights = None
    if spec.class_weighting:
        # Square-root inverse frequency, clipped: a grade seen once must not outweigh the rest.
        counts = np.bincount(grades[tr_idx], minlength=GRADES).astype(np.float64)
        present = counts > 0
        w = np.ones(GRADES)
        w[present] = np.clip(np.sqrt(counts[present].sum() / (present.sum() * counts[present])), 0.2, 5.0)
        weights = torch.tensor(w, dtype=torch.float32, device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    head, head_params = model.lexical, []
    if head is not None:
        feats = head.matrix(examples["query"].tolist(), examples["doc_title"].tolist(), examples["doc_text"].tolist())
        if not head.fitted:
            head.prefit(feats[tr_idx], grades[tr_idx], None if weights is None else weights.cpu().numpy())
            log(f"  lexical head fitted on {len(tr_idx)} pairs ({', '.join(head.features)})")
        head_w = torch.nn.Parameter(torch.tensor(head.weight, device=device))
        head_b = torch.nn.Parameter(torch.tensor(head.bias, device=device))
        head_params = [head_w, head_b]
        feats_t = torch.as_tensor(feats, device=device)

    def offset(idx):
        return feats_t[torch.as_tensor(idx, device=device)] @ head_w.T + head_b if head is not None else 0.0

    bs = spec.batch_size
    steps_per_epoch = max(1, -(-len(tr_idx) // (bs * spec.grad_accumulation)))
    total = steps_per_epoch * epochs
    groups = [{"params": list(model.model.parameters())}]
    if head_params:
        groups.append({"params": head_params, "lr": spec.head_lr, "weight_decay": 0.0})
    opt = _adamw(groups, spec.lr)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / max(1, total - warmup)))
    use_bf16 = device == "cuda"

    def batch_of(idx):
        b = model.tokenizer.pad({k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt")
        return {k: v.to(device) for k, v in b.items()}, torch.tensor(grades[idx], device=device)

    def evaluate_loss(idx):
        model.model.eval()
        tot, n = 0.0, 0
        with torch.inference_mode():
            for s in range(0, len(idx), 64):
                part = idx[s:s + 64]
                b, y = batch_of(part)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model.model(**b).logits
                tot += float(loss_fn(logits.float() + offset(part), y)) * len(part)
                n += len(part)
        return tot / max(1, n)

    from serm.progress import Progress

    result = TrainResult(epochs_run=0, best_epoch=0, pairs=len(tr_idx), device=device)
    best_state, best_val, best_head = None, float("inf"), None
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.model.train()
        perm = rng.permutation(tr_idx)
        running, seen = 0.0, 0
        opt.zero_grad()
        bar = Progress(len(perm), f"training epoch {epoch}/{epochs}", "pairs")
        for step, s in enumerate(range(0, len(perm), bs)):
            part = perm[s:s + bs]
            b, y = batch_of(part)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model.model(**b).logits
            loss = loss_fn(logits.float() + offset(part), y) / spec.grad_accumulation
            loss.backward()
            running += float(loss.detach()) * spec.grad_accumulation * len(y)
            seen += len(y)
            if (step + 1) % spec.grad_accumulation == 0 or s + bs >= len(perm):
                torch.nn.utils.clip_grad_norm_(model.model.parameters(), 1.0)
                if head_params:
                    torch.nn.utils.clip_grad_norm_(head_params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
            bar.update(len(y))
        bar.close()
        result.train_loss.append(round(running / max(1, seen), 4))
        result.epochs_run = epoch
        if n_val:
            val = evaluate_loss(val_idx)
            result.val_loss.append(round(val, 4))
            if val < best_val:
                best_val, result.best_epoch = val, epoch
                best_state = copy.deepcopy(model.model.state_dict())
                best_head = [p.detach().cpu().numpy().copy() for p in head_params]
            log(f"  epoch {epoch}/{epochs}: train loss {result.train_loss[-1]:.4f}, val loss {val:.4f}")
        else:
            result.best_epoch = epoch
            log(f"  epoch {epoch}/{epochs}: train loss {result.train_loss[-1]:.4f}")
    if best_state is not None:
        model.model.load_state_dict(best_state)
    if head is not None:
        kept = best_head if best_head is not None else [p.detach().cpu().numpy() for p in head_params]
        head.weight, head.bias = kept[0].astype("float32"), kept[1].astype("float32")
    model.model.eval()
    result.seconds = round(time.perf_counter() - t0, 1)
    return result
