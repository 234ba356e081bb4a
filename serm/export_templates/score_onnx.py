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
from serm_preprocess import document, lexical_features, whole_document  # noqa: E402  (serm.model.passages, copied)


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
        self.embedding = self.pre.get("embedding")    # the bi-encoder behind an embedding_cosine feature
        if self.embedding:
            where = directory / self.embedding["directory"]
            self.bi_tokenizer = Tokenizer.from_file(str(where / "tokenizer.json"))
            self.bi_tokenizer.no_padding()
            self.bi_tokenizer.enable_truncation(int(self.embedding["max_length"]))
            self.bi_session = ort.InferenceSession(str(where / "model.onnx"), options,
                                                   providers=["CPUExecutionProvider"])
            self.bi_inputs = [i.name for i in self.bi_session.get_inputs()]

    def embed(self, texts, batch_size=64):
        """L2-normalised mean-pooled bi-encoder embeddings, one row per text."""
        encodings = self.bi_tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        out = None
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feed = self._feed(self.bi_inputs, [encodings[i] for i in idx], lengths[idx], 0)
            hidden = self.bi_session.run(["last_hidden_state"], feed)[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            v = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.zeros((len(encodings), v.shape[1]), dtype=np.float32)
            out[idx] = v
        return out

    def features(self, queries, titles, texts):
        """(n, k) head features, in the head's order: lexical ones from serm_preprocess, the
        cosine from the bi-encoder."""
        names = self.lexical["features"]
        lexical = [n for n in names if n != "embedding_cosine"]
        rows = np.array([lexical_features(q, t, x, lexical) for q, t, x in zip(queries, titles, texts)],
                        dtype=np.float32).reshape(len(queries), len(lexical))
        out = np.zeros((len(queries), len(names)), dtype=np.float32)
        out[:, [names.index(n) for n in lexical]] = rows
        if "embedding_cosine" in names:
            docs = [whole_document(t, x) for t, x in zip(titles, texts)]
            distinct = sorted(set(queries) | set(docs))
            vec = self.embed(distinct)
            row = {t: i for i, t in enumerate(distinct)}
            out[:, names.index("embedding_cosine")] = (vec[[row[q] for q in queries]]
                                                       * vec[[row[d] for d in docs]]).sum(axis=1)
        return out

    @staticmethod
    def _feed(inputs, encodings, lengths, pad_id):
        width = int(lengths.max())
        feed = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in inputs}
        if "input_ids" in feed:
            feed["input_ids"][:] = pad_id
        for row, (e, n) in enumerate(zip(encodings, lengths)):
            for name, values in (("input_ids", e.ids), ("attention_mask", e.attention_mask),
                                 ("token_type_ids", e.type_ids)):
                if name in feed:
                    feed[name][row, :n] = values
        return feed

    def predict_proba(self, queries, texts, titles=None, batch_size=32):
        """(n, 4) grade probabilities; pairs are length-sorted into batches padded to their longest."""
        queries, texts = list(queries), list(texts)
        titles = list(titles) if titles is not None else [""] * len(texts)
        docs = [document(q, t, x, self.pre["window_words"], self.pre["passage"])
                for q, t, x in zip(queries, titles, texts)]
        encodings = self.tokenizer.encode_batch(list(zip(queries, docs)))
        lengths = np.array([len(e.ids) for e in encodings])
        out = np.zeros((len(encodings), 4), dtype=np.float32)
        feats = self.features(queries, titles, texts) if self.lexical else None
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feed = self._feed(self.inputs, [encodings[i] for i in idx], lengths[idx], self.pad_id)
            logits = self.session.run(["logits"], feed)[0]
            if self.lexical:
                logits = logits + feats[idx] @ np.array(self.lexical["weight"], dtype=np.float32).T \
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
