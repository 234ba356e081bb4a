"""Score (query, document) pairs with the exported ONNX graph: numpy, tokenizers and
onnxruntime only (no SERM, no torch).

    python score_onnx.py "who won super bowl 50?" "The Broncos beat the Panthers 24-10."

    >>> reranker = OnnxReranker(".")                                   # doctest: +SKIP
    >>> reranker.score(["who won?"] * 2, ["The Broncos won.", "Paris is in France."])
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serm_preprocess import document, lexical_features  # noqa: E402  (serm.model.passages, copied)


class OnnxReranker:
    def __init__(self, directory=HERE, threads=None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        directory = Path(directory)
        self.pre = json.loads((directory / "serm_preprocessing.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.pre["max_length"], strategy="longest_first")
        pad = json.loads((directory / "config.json").read_text()).get("pad_token_id")
        self.pad_id = 0 if pad is None else int(pad)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.lexical = self.pre.get("lexical_head")   # added to the graph's logits where the model has one

    def predict_proba(self, queries, texts, titles=None, batch_size=32):
        """(n, 4) grade probabilities; pairs are length-sorted into batches padded to their longest."""
        queries, texts = list(queries), list(texts)
        titles = list(titles) if titles is not None else [""] * len(texts)
        docs = [document(q, t, x, self.pre["window_words"], self.pre["passage"])
                for q, t, x in zip(queries, titles, texts)]
        encodings = self.tokenizer.encode_batch(list(zip(queries, docs)))
        lengths = np.array([len(e.ids) for e in encodings])
        out = np.zeros((len(encodings), 4), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = int(lengths[idx].max())
            feed = {name: np.zeros((len(idx), width), dtype=np.int64) for name in self.inputs}
            if "input_ids" in feed:
                feed["input_ids"][:] = self.pad_id
            for row, i in enumerate(idx):
                e, n = encodings[i], lengths[i]
                for name, values in (("input_ids", e.ids), ("attention_mask", e.attention_mask),
                                     ("token_type_ids", e.type_ids)):
                    if name in feed:
                        feed[name][row, :n] = values
            logits = self.session.run(["logits"], feed)[0]
            if self.lexical:
                feats = np.array([lexical_features(queries[i], titles[i], texts[i], self.lexical["features"])
                                  for i in idx], dtype=np.float32).reshape(len(idx), -1)
                logits = logits + feats @ np.array(self.lexical["weight"], dtype=np.float32).T \
                    + np.array(self.lexical["bias"], dtype=np.float32)
            z = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(z)
            out[idx] = p / p.sum(axis=1, keepdims=True)
        return out

    def score(self, queries, texts, titles=None, batch_size=32):
        """Expected grades in [0, 3]: rank by it, highest first."""
        return self.predict_proba(queries, texts, titles, batch_size) @ np.arange(4, dtype=np.float32)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python score_onnx.py QUERY DOCUMENT_TEXT")
    print(f"{float(OnnxReranker().score([sys.argv[1]], [sys.argv[2]])[0]):.4f}")
