"""`RelevanceModel`: a cross-encoder with a 4-grade head, saved as a HF model directory.

    >>> m = RelevanceModel.load("builtin:minilm-l6", ModelSpec())      # doctest: +SKIP
    >>> m.score(["who won?"], ["Super Bowl"], ["The Broncos won ..."])  # doctest: +SKIP
    array([1.52], dtype=float32)

`score` is the expected grade Σ y·P(y|q,d) in [0, 3]; `predict_proba` the 4 probabilities.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from serm import schema
from serm.errors import DataError
from serm.files import atomic_write_text
from serm.model.builtin import BUILTIN, resolve_base  # noqa: F401  (re-exported: the model's references)

GRADES = 4


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise DataError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    import sys

    if message not in _WARNED:
        _WARNED.add(message)
        print(f"note: {message}", file=sys.stderr)


class RelevanceModel:
    #: Score BERT models through `fast_bert.BertScorer`; False forces the HF forward.
    fast_path: bool = True

    def __init__(self, model, tokenizer, spec, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self._compiled_forward = None
        self._int8_scorers: dict = {}
        # Lexical evidence fused into the logits (`serm.model.lexical`); None: the network alone.
        self.lexical = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path_or_id: str | Path, spec, device: str = "auto") -> "RelevanceModel":
        """Load a saved SERM model directory, or start a fresh 4-grade head on a base encoder."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1") if str(path_or_id).startswith("builtin:") else None
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the "newly initialized head" warning is expected here
        hf_logging.disable_progress_bar()
        source = resolve_base(str(path_or_id))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=GRADES)
        except OSError as exc:
            raise DataError(f"cannot load model {path_or_id!r}: {exc}") from None
        if model.config.num_labels != GRADES:
            raise DataError(f"model {path_or_id!r} has {model.config.num_labels} labels; SERM needs {GRADES}")
        device = pick_device(device)
        model.to(device).eval()
        out = cls(model, tokenizer, spec, device)
        from serm.model.lexical import LexicalHead

        # A saved head is part of the model (it scores as it was trained); a model without one
        # gets a fresh, unfitted head (a zero offset until training fits it) when the spec asks.
        saved = LexicalHead.load(source) if Path(source).is_dir() else None
        wanted = tuple(getattr(spec, "lexical_features", ()) or ())
        out.lexical = saved if saved is not None else (LexicalHead.fresh(wanted) if wanted else None)
        return out

    def save(self, out_dir: Path, metrics: dict | None = None, lineage: dict | None = None) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.config.id2label = {i: f"grade_{i}" for i in range(GRADES)}
        self.model.config.label2id = {f"grade_{i}": i for i in range(GRADES)}
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        if self.lexical is not None:
            self.lexical.save(out_dir)
        else:
            from serm.model.lexical import HEAD_FILE

            (out_dir / HEAD_FILE).unlink(missing_ok=True)   # a directory reused for a model without one
        atomic_write_text(out_dir / schema.MODEL_SPEC, json.dumps(self.spec.model_dump(mode="json"), indent=2))
        if metrics is not None:
            atomic_write_text(out_dir / schema.MODEL_METRICS, json.dumps(metrics, indent=2, sort_keys=True))
        if lineage is not None:
            atomic_write_text(out_dir / schema.MODEL_LINEAGE, json.dumps(lineage, indent=2, sort_keys=True))
        return out_dir

    # ------------------------------------------------------------------ scoring
    def encode(self, queries, docs):
        # longest_first: a pair over max_length loses tokens from its longer side, which is the
        # document for any query shorter than half of max_length. `only_second` would raise on a
        # query that alone fills max_length (a Cyrillic or Thai question can, under an English
        # WordPiece vocabulary).
        return self.tokenizer(list(queries), list(docs), truncation="longest_first",
                              max_length=self.spec.max_length, padding=False)

    def logits(self, queries, titles, texts, batch_size: int | None = None, dropout: bool = False,
               passes: int | None = None, dropout_layers: int | None = None):
        """Raw 4-way logits, in input order: (n, 4), or (passes, n, 4) with `passes`.

        Pairs are tokenized in one batched call, sorted by token length and cut into batches of
        `batch_size` that are padded only to their own longest pair. A BERT model in eval mode
        with no hooks runs through `fast_bert.BertScorer` (same function, less work; see there);
        any other model, or `fast_path = False`, through the HF forward; with `spec.compile`,
        through the HF forward compiled by torch.compile. `dropout=True` samples the network with
        dropout active (Monte Carlo dropout; seed torch's RNG for repeatable passes): `passes`
        samples per pair, and on the fast path `dropout_layers=N` samples only the last N encoder
        layers and the classifier, the layers below running once per batch for all passes (the
        HF forward samples every layer). A lexical head adds its offset to every pass.
        """
        import numpy as np
        import torch

        from serm.model.passages import model_inputs

        docs = model_inputs(queries, titles, texts, self.spec.passage, self.spec.window_words)
        enc = self.encode(queries, docs)
        n = len(enc["input_ids"])
        out = np.zeros((n, GRADES) if passes is None else (passes, n, GRADES), dtype=np.float32)
        if n == 0:
            return out
        lengths = np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        bs = batch_size or self.spec.batch_size
        self.model.eval()
        scorer = None if self.spec.compile and not dropout else self._scorer(dropout, dropout_layers if dropout else None)
        forward = self._compiled() if self.spec.compile and not dropout else self.model
        if dropout and scorer is None:
            self.model.train()   # the HF forward's own dropout (no batch statistics in BERT-like encoders)
        from serm.progress import Progress

        try:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"), \
                    Progress(n, "scoring" + (" (dropout pass)" if dropout else ""), "pairs") as bar:
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    batch = self._pad(enc, idx, lengths[idx])
                    if scorer is not None:
                        logits = scorer(batch["input_ids"], batch.get("token_type_ids"),
                                        torch.from_numpy(lengths[idx]), passes)
                    elif passes is None:
                        logits = forward(**batch).logits
                    else:
                        logits = torch.stack([forward(**batch).logits for _ in range(passes)])
                    out[..., idx, :] = logits.float().cpu().numpy()
                    bar.update(len(idx))
        finally:
            self.model.eval()
        if self.lexical is not None:
            out += self.lexical.logits(self.lexical.matrix(queries, titles, texts))
        return out

    def _compiled(self):
        """The HF forward through torch.compile, built once (it reads the module's parameters, so
        training in between needs no rebuild)."""
        if self._compiled_forward is None:
            import torch

            self._compiled_forward = torch.compile(self.model, dynamic=True)
        return self._compiled_forward

    @property
    def int8(self) -> bool:
        """Whether scoring runs the int8 path: `precision: int8`, on a CPU (a GPU scores in bf16)."""
        return getattr(self.spec, "precision", "fp32") == "int8" and self.device == "cpu"

    def _scorer(self, dropout: bool = False, dropout_layers: int | None = None):
        from serm.model.fast_bert import BertScorer, int8_available

        if not self.fast_path:
            return None
        if not self.int8:
            return BertScorer.for_model(self.model, dropout, dropout_layers=dropout_layers)
        # Quantizing the weights costs ~0.2 s: keep the int8 scorer while no parameter changed
        # (an optimizer step or a loaded state dict bumps every tensor's version counter).
        key = tuple((id(p), p._version) for p in self.model.parameters())
        kind = (dropout, dropout_layers)
        if self._int8_scorers.get(kind, (None,))[0] != key:
            kernels = int8_available()
            scorer = BertScorer.for_model(self.model, dropout, int8=kernels, dropout_layers=dropout_layers)
            if not kernels:
                _warn_once("model.precision is int8 but this torch build has no quantized CPU kernels: scoring in fp32")
            elif scorer is None:
                _warn_once(f"model.precision int8 covers BERT-family encoders through the fast scorer; "
                           f"{type(self.model).__name__} scores in fp32 here")
            self._int8_scorers[kind] = (key, scorer)
        return self._int8_scorers[kind][1]

    def _pad(self, enc, idx, lengths) -> dict:
        """One batch as right-padded tensors on the device (the tokenizer's own `pad` where its
        inputs are not the plain BERT ones)."""
        import numpy as np
        import torch

        keys = set(enc.keys())
        if self.tokenizer.padding_side != "right" or not keys <= {"input_ids", "token_type_ids", "attention_mask"}:
            batch = self.tokenizer.pad({k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt")
            return {k: v.to(self.device) for k, v in batch.items()}
        width = int(lengths.max())
        ids = np.full((len(idx), width), self.tokenizer.pad_token_id, dtype=np.int64)
        types = np.full((len(idx), width), self.tokenizer.pad_token_type_id, dtype=np.int64)
        has_types = "token_type_ids" in keys
        for row, i in enumerate(idx):
            ids[row, :lengths[row]] = enc["input_ids"][i]
            if has_types:
                types[row, :lengths[row]] = enc["token_type_ids"][i]
        batch = {"input_ids": torch.from_numpy(ids),
                 "attention_mask": torch.from_numpy((np.arange(width) < lengths[:, None]).astype(np.int64))}
        if has_types:
            batch["token_type_ids"] = torch.from_numpy(types)
        return {k: v.to(self.device) for k, v in batch.items()}

    def predict_proba(self, queries, titles, texts, batch_size: int | None = None, dropout: bool = False,
                      passes: int | None = None, dropout_layers: int | None = None):
        import numpy as np

        z = self.logits(queries, titles, texts, batch_size, dropout, passes, dropout_layers)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    @staticmethod
    def expected_grade(proba):
        import numpy as np

        return (proba * np.arange(GRADES, dtype=np.float32)).sum(axis=1)

    def score(self, queries, titles, texts, batch_size: int | None = None):
        return self.expected_grade(self.predict_proba(queries, titles, texts, batch_size))

    def score_frame(self, df, batch_size: int | None = None, dropout: bool = False, passes: int | None = None,
                    dropout_layers: int | None = None):
        """Probabilities for a frame with query, doc_title, doc_text columns ((passes, n, 4) with `passes`)."""
        return self.predict_proba(df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist(), batch_size,
                                  dropout, passes, dropout_layers)
