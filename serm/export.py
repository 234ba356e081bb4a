"""`serm export`: a model version as a self-contained directory a search stack can serve.

    serm export --model production --format onnx --out exported/

Both formats write the Hugging Face model and tokenizer (loadable by `transformers` and by
sentence-transformers' `CrossEncoder`), `serm_preprocessing.json` (how the document side is
built, the token budget, how the score is read from the four logits), `serm_preprocess.py` (the
same in plain Python, no SERM needed), and a model card `README.md` with the version's lineage
and metrics. `onnx` adds `model.onnx` and `score_onnx.py`, a scorer that needs only numpy,
tokenizers and onnxruntime; the graph is checked against torch on real pairs before the
directory is kept (max |Δ| of the probabilities and the Spearman correlation of the scores).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from serm import schema
from serm.errors import DataError
from serm.files import atomic_write_json, atomic_write_text
from serm.model.lexical import EMBEDDING_MAX_LENGTH

FORMATS = ("hf", "onnx")
PREPROCESSING_FILE = "serm_preprocessing.json"
ONNX_FILE = "model.onnx"
#: Where an export keeps the bi-encoder of a head with `embedding_cosine` (HF files, and its ONNX
#: graph in the onnx format).
BI_ENCODER_DIR = "bi_encoder"
# The ONNX graph must reproduce torch's probabilities to this (fp32 graph: ~1e-6 in practice).
MAX_ONNX_DELTA = 1e-3


@dataclass(frozen=True)
class ExportCheck:
    pairs: int
    max_abs_delta: float      # of the four probabilities
    spearman: float           # of the expected grades

    def describe(self) -> str:
        return (f"ONNX vs torch on {self.pairs} pairs: max |Δ probability| {self.max_abs_delta:.2e}, "
                f"Spearman of scores {self.spearman:.6f}")


def preprocessing(spec, lexical=None) -> dict:
    """What a serving stack must do before and after the network, written down (`lexical`: the
    model's lexical head, whose offset is added to the network's logits)."""
    return {
        "format": "serm-cross-encoder/1",
        "inputs": "tokenizer(query, document) as a text pair",
        "document": "'{title}: {text}' with '_' in the title read as a space; just text when there is no title",
        "passage": spec.passage,
        "window_words": spec.window_words,
        "passage_rule": ("best_window: when the text has more than window_words words, keep the window of "
                         "window_words words (stride window_words // 2) with the most words sharing a "
                         "lower-cased \\w+ token with the query; the first such window on ties"
                         if spec.passage == "best_window" else "the text as it is"),
        "max_length": spec.max_length,
        "truncation": "longest_first",
        "outputs": "logits over grades 0, 1, 2, 3",
        "lexical_head": None if lexical is None else lexical.to_dict(),
        "lexical_rule": None if lexical is None else (
            "logits += weight @ lexical_features(query, title, text, features) + bias, over the whole document "
            "(serm_preprocess.lexical_features), before the softmax"),
        "embedding": None if lexical is None or not lexical.uses_embeddings else {
            "directory": BI_ENCODER_DIR, "text": "the query; the document as serm_preprocess.whole_document(title, text)",
            "max_length": EMBEDDING_MAX_LENGTH, "truncation": "right", "pooling": "mean over the attention mask",
            "normalize": "L2", "feature": "embedding_cosine = dot(query vector, document vector)"},
        "score": "expected grade: sum_g g * softmax(logits)_g, in [0, 3]; rank by it, highest first",
        "grades": {"0": "not relevant", "1": "related, does not answer", "2": "partly answers",
                   "3": "dedicated, answers exactly"},
    }


def export_model(model, out: Path, fmt: str, ref: str, version: int | None = None, source_dir: Path | None = None,
                 check_pairs=None, overwrite: bool = False, log=print) -> dict:
    """Write `model` (a loaded `RelevanceModel`) to `out` as `fmt`; returns what was written.

    The directory is built beside `out` and renamed into place only when complete (and, for
    ONNX, checked), so a failed export never leaves a half-written model behind."""
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out} exists and is not empty; pass --overwrite to replace it, or another --out")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    lineage = _read_json(Path(source_dir) / schema.MODEL_LINEAGE) if source_dir else {}
    metrics = _read_json(Path(source_dir) / schema.MODEL_METRICS) if source_dir else {}
    model.save(tmp, metrics=metrics or None, lineage=lineage or None)
    atomic_write_json(tmp / PREPROCESSING_FILE, preprocessing(model.spec, model.lexical))
    from serm.model import passages

    shutil.copyfile(passages.__file__, tmp / "serm_preprocess.py")   # stdlib only: the one implementation
    report = {"format": fmt, "model": ref, "version": version, "out": str(out), "files": []}
    embedding = model.lexical is not None and model.lexical.uses_embeddings
    if embedding:
        _export_bi_encoder(tmp / BI_ENCODER_DIR, onnx=fmt == "onnx")
    if fmt == "onnx":
        _export_onnx(model, tmp / ONNX_FILE)
        shutil.copyfile(Path(__file__).with_name("export_templates") / "score_onnx.py", tmp / "score_onnx.py")
        if check_pairs is None or not len(check_pairs):
            raise DataError("the ONNX check needs pairs to score; the workspace has no test set and none was given")
        check = check_onnx(model, tmp, check_pairs)
        log(check.describe())
        if not check.max_abs_delta <= MAX_ONNX_DELTA:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"the ONNX graph differs from torch by {check.max_abs_delta:.2e} (> {MAX_ONNX_DELTA}); "
                            "nothing was written")
        report["check"] = {"pairs": check.pairs, "max_abs_delta": check.max_abs_delta, "spearman": check.spearman}
    atomic_write_text(tmp / "README.md", model_card(model.spec, ref, version, lineage, metrics, fmt,
                                                   report.get("check"), lexical=model.lexical is not None,
                                                   embedding=embedding))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    report["files"] = sorted(p.name for p in out.iterdir())
    return report


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise DataError(f"--format onnx needs {', '.join(missing)}: pip install 'serm[export]' "
                        "(scripts/setup.sh installs it)")


def _export_onnx(model, path: Path) -> None:
    """The cross-encoder's logits as an ONNX graph (see `_to_onnx`)."""
    _require_onnx()
    example = model.tokenizer(["what is exported"] * 2, ["a passage that is long enough to be a passage"] * 2,
                              padding=True, return_tensors="pt")
    _to_onnx(model.model.to("cpu").float().eval(), model.tokenizer, example, "logits", path)
    model.model.to(model.device)


def _export_bi_encoder(directory: Path, onnx: bool) -> None:
    """The packaged bi-encoder behind `embedding_cosine`: its HF files (tokenizer and weights), and
    with `onnx` its last hidden state as `model.onnx` (pooling is left to the scorer)."""
    from serm.model.builtin import resolve_base
    from serm.model.lexical import EMBEDDING_MODEL

    src = Path(resolve_base(EMBEDDING_MODEL))
    directory.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, directory / name)
    if onnx:
        _require_onnx()
        from serm.annotation.embedding import _encoder

        tokenizer, encoder = _encoder(EMBEDDING_MODEL)
        example = tokenizer(["what is exported", "a passage that is long enough"], padding=True, return_tensors="pt")
        _to_onnx(encoder, tokenizer, example, "last_hidden_state", directory / ONNX_FILE)


def _to_onnx(network, tokenizer, example, output: str, path: Path) -> None:
    """torch.export-based ONNX export (opset 18) of `network`'s `output` with dynamic batch and
    sequence axes, over the tokenizer's inputs."""
    import warnings

    import torch

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class Output(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return getattr(self.inner(**{n: given[n] for n in names}), output)

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dims = {n: ({0: batch, 1: sequence} if n in names else None)
            for n in ("input_ids", "attention_mask", "token_type_ids")}
    import contextlib
    import io
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Output(network), tuple(example[n] for n in names), str(path), input_names=names,
                          output_names=[output], dynamic_shapes=dims, opset_version=18,
                          dynamo=True, external_data=False)


def check_onnx(model, directory: Path, pairs) -> ExportCheck:
    """Score `pairs` (query, doc_title, doc_text) with torch and with the exported directory's own
    `score_onnx.py` (tokenizers + onnxruntime), and compare."""
    import importlib.util

    import numpy as np
    from scipy.stats import spearmanr

    spec = importlib.util.spec_from_file_location("serm_export_score_onnx", directory / "score_onnx.py")
    scorer_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scorer_mod)
    scorer = scorer_mod.OnnxReranker(directory)
    queries, titles, texts = (pairs[c].astype(str).tolist() for c in ("query", "doc_title", "doc_text"))
    ref = model.predict_proba(queries, titles, texts)
    got = scorer.predict_proba(queries, texts, titles)
    delta = float(np.abs(ref - got).max())
    grades = np.arange(4, dtype=np.float64)
    rho = float(spearmanr(ref @ grades, got @ grades).statistic) if len(pairs) > 1 else 1.0
    return ExportCheck(len(pairs), delta, rho)


def model_card(spec, ref: str, version: int | None, lineage: dict, metrics: dict, fmt: str, check: dict | None,
               lexical: bool = False, embedding: bool = False) -> str:
    name = f"v{version}" if version is not None else ref
    lines = [f"# SERM relevance model {name}", "",
             "A cross-encoder that grades a (query, document) pair 0-3 (0 not relevant ... 3 dedicated and answers "
             "exactly). Rank by the expected grade Σ g·P(g), highest first.", "",
             "## Inputs", "",
             f"- max_length {spec.max_length} tokens, truncation longest_first, the pair (query, document).",
             f"- document side: `title: text`; passage `{spec.passage}`"
             + (f" (the {spec.window_words}-word window with the most query words)" if spec.passage == "best_window" else ""),
             f"- written down in `{PREPROCESSING_FILE}`, implemented in plain Python in `serm_preprocess.py`.", "",
             "## Use", "", "```python",
             "from sentence_transformers import CrossEncoder",
             "from serm_preprocess import document   # in this directory",
             "model = CrossEncoder('path/to/this/directory')",
             "doc = document(query, title, text, window_words=%d, passage=%r)" % (spec.window_words, spec.passage),
             "p = model.predict([(query, doc)], apply_softmax=True)   # (n, 4) grade probabilities",
             "score = p @ [0, 1, 2, 3]                                 # expected grade", "```", ""]
    if lexical:
        lines[-2:-1] = [
            "```", "",
            "This model has a lexical head: add its offset to the network's logits before the softmax "
            "(`score_onnx.py` does):", "", "```python",
            "import json, numpy as np",
            "from serm_preprocess import lexical_features",
            f"head = json.load(open('{PREPROCESSING_FILE}'))['lexical_head']",
            "logits = model.predict([(query, doc)])                    # (n, 4) logits of the network",
            "logits = logits + np.array(head['weight']) @ lexical_features(query, title, text, head['features']) "
            "+ head['bias']",
            "p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)", "```"]
    if embedding:
        lines[-1:] = [
            "```", "",
            f"Its head also uses `embedding_cosine`, which `lexical_features` does not compute: the cosine of the "
            f"bi-encoder in `{BI_ENCODER_DIR}/` (all-MiniLM-L6-v2) between the query and `title text`, each "
            f"truncated to {EMBEDDING_MAX_LENGTH} tokens, mean-pooled over the attention mask and L2-normalised "
            f"(`{PREPROCESSING_FILE}`: `embedding`). Put it in its place in `head['features']` "
            "(`score_onnx.py`'s `OnnxReranker.features` builds the whole matrix):", "", "```python",
            "from sentence_transformers import SentenceTransformer",
            f"bi = SentenceTransformer('{BI_ENCODER_DIR}')                # mean pooling",
            "from serm_preprocess import whole_document",
            "q, d = bi.encode([query, whole_document(title, text)], normalize_embeddings=True)",
            "cosine = float(q @ d)", "```", ""]
    if fmt == "onnx":
        lines += ["With only numpy, tokenizers and onnxruntime:", "", "```python",
                  "from score_onnx import OnnxReranker",
                  "scores = OnnxReranker('.').score(['who won?'] * 2, ['The Broncos won.', 'Paris is in France.'])",
                  "```", ""]
        if check:
            lines += [f"ONNX checked against torch on {check['pairs']} pairs: max |Δ probability| "
                      f"{check['max_abs_delta']:.2e}, Spearman {check['spearman']:.6f}.", ""]
    if lineage:
        lines += ["## Lineage", "", "```json", json.dumps(lineage, indent=2, sort_keys=True, default=str), "```", ""]
    if metrics:
        lines += ["## Metrics", "", "```json", json.dumps(metrics, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def default_check_pairs(ws, path=None, n: int = 256):
    """Pairs to check an ONNX graph on: `path` (judgments or pairs), else the workspace's static
    test set, else shipped XQuAD questions with their answer paragraph and a random one."""
    if path is not None:
        from serm.serving import read_pairs

        pairs = read_pairs(path)
    elif ws.layout.tests.exists():
        from serm.files import read_parquet

        pairs = read_parquet(ws.layout.tests)
    else:   # each question's answer paragraph and one random paragraph of its language
        from serm.data import xquad

        questions = xquad.load_questions().sample(n=max(1, n // 2), random_state=0)
        pairs = xquad.candidate_lists(questions, xquad.load_paragraphs(), 0, 1, seed=0)
    pairs = pairs.rename(columns={"text": "doc_text", "title": "doc_title"})
    if "doc_title" not in pairs.columns:
        pairs = pairs.assign(doc_title="")
    return pairs.sample(n=min(n, len(pairs)), random_state=0).reset_index(drop=True)
