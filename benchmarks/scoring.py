"""Scoring speed against the peers a user would pick for CPU re-ranking, on the same weights, the
same pairs and the same strings, in one run.

    .venv/bin/pip install -e ".[bench]"                            # the peers (OpenVINO, flashrank)
    .venv/bin/python benchmarks/scoring.py                         # 5,000 Home Depot pairs, batch 32
    .venv/bin/python benchmarks/scoring.py --model path/to/saved/model --data my.parquet
    .venv/bin/python benchmarks/scoring.py --sweep                 # + cost vs batch size and length (PNG)

One 4-label cross-encoder (the packaged all-MiniLM-L6-v2 with a fresh seeded head, or a saved SERM
model) is handed to every contender:

- SERM `RelevanceModel.logits`, `model.precision` fp32 and int8;
- sentence-transformers `CrossEncoder.predict` with `backend="torch"`, `"onnx"` and `"openvino"`;
- ONNX Runtime on the model exported to ONNX (TorchScript exporter): fp32 as exported, fp32 after
  its BERT graph optimiser (O2: fused attention, layer norm and GELU), and dynamic int8
  (`quantize_dynamic`, per-tensor and per-channel weights, and O2 + int8);
- OpenVINO compiling the exported ONNX graph directly (`openvino.Core().compile_model`), at its
  default inference precision (bf16 where the CPU has AVX512_BF16/AMX) and at f32;
- flashrank, which serves a dynamic-int8 ONNX cross-encoder with ONNX Runtime, one query's
  candidates per call (its API), from its cache-dir layout.

Every contender reads the identical (query, document) strings: the document is
`model_inputs(..., passage="head")`, `title: text`; all truncate `longest_first` at max_length.
The ONNX Runtime and OpenVINO contenders get SERM's own harness (one batched tokenizer call,
batches sorted by length and padded to their longest pair), which is what makes a runtime fast
on real pairs; sentence-transformers sorts by length itself. Timings cover the whole call,
tokenizing included; each contender is warmed up, the contenders alternate over the repeats
(forward, then reverse order) and the median is reported. A peer that cannot be installed or
built is listed with the reason.

Pairs are whole queries (queries are drawn until --pairs is reached) so NDCG@4 is meaningful.
Fidelity is against SERM fp32 (the same function as the HF forward in fp32): Spearman of the
expected grade, and the change in NDCG@4 with a 95% bootstrap interval over queries. The last
line is `ratio vs fastest peer: X`: the fastest SERM path whose NDCG@4 stays within
--ndcg-tolerance of fp32, over the fastest peer at any fidelity. The run fails (exit 1) when
sentence-transformers (torch) and SERM fp32 disagree (Spearman below --min-spearman).

Writes benchmarks/results/scoring-<timestamp>.json (and scoring-sweep-<timestamp>.png with
--sweep). On a CUDA machine it also times SERM on the GPU (bf16 autocast) and estimates the share
of the GPU's bf16 peak it reaches, counting 2 x (encoder parameters without the embedding tables)
x (real tokens) FLOPs per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Dense bf16 peak (TFLOP/s, no sparsity) by device name; --gpu-peak-tflops overrides.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                    "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0}
SERM_SIDES = ("serm fp32", "serm int8")
REFERENCE = "serm fp32"


def load_pairs(path: Path | None, n: int, seed: int):
    """Judged pairs of whole queries (query_id, query, doc_title, doc_text, grade), queries drawn
    with `seed` until at least `n` pairs, and where they came from."""
    from serm.data import homedepot_path
    from serm.data.judgments import load_judgments

    if path is None and homedepot_path().exists():
        path = homedepot_path()
    if path is not None:
        df = load_judgments(path)
        source = str(path)
    else:
        print(f"note: {homedepot_path()} is absent; using the packaged XQuAD (English questions, long paragraphs "
              f"truncated at max_length): pass --data for other pairs")
        df = xquad_english(seed)
        source = "serm/data/xquad (en)"
    sizes = df.groupby("query_id", sort=False).size()
    sizes = sizes.sample(frac=1.0, random_state=seed)
    keep = sizes.index[: int((sizes.cumsum() < n).sum()) + 1]
    return df[df.query_id.isin(keep)].reset_index(drop=True), source


def expected_grade(z):
    import numpy as np

    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True) * np.arange(z.shape[1])).sum(axis=1)


def per_query_ndcg(df, scores, k: int = 4):
    """NDCG@k per query that has a relevant candidate (the evaluation's own definition and ties)."""
    import numpy as np
    import pandas as pd

    from serm.evaluation import ndcg_at_k

    tiebreak = pd.util.hash_pandas_object(df[["query_id", "doc_id"]], index=False).to_numpy()
    out = []
    for idx in df.groupby("query_id", sort=False).indices.values():
        if len(idx) >= 2 and df["grade"].iloc[idx].max() > 0:
            out.append(ndcg_at_k(df["grade"].to_numpy()[idx], scores[idx], k, tiebreak[idx]))
    return np.array(out)


def fidelity(df, ref_logits, logits, seed: int = 0) -> dict:
    """Spearman of the expected grade and NDCG@4 change (95% bootstrap CI over queries) vs the reference."""
    import numpy as np
    from scipy.stats import spearmanr

    g_ref, g = expected_grade(ref_logits), expected_grade(logits)
    a, b = per_query_ndcg(df, g_ref), per_query_ndcg(df, g)
    d = b - a
    boot = np.random.default_rng(seed).integers(0, len(d), (2000, len(d)))
    lo, hi = np.percentile(d[boot].mean(axis=1), [2.5, 97.5])
    return {"spearman_expected_grade": float(spearmanr(g_ref, g).statistic),
            "mean_abs_grade_diff": float(np.abs(g - g_ref).mean()),
            "ndcg@4": float(b.mean()), "ndcg@4_delta": float(d.mean()), "ndcg@4_delta_ci95": [float(lo), float(hi)],
            "queries_changed": int((np.abs(d) > 1e-12).sum()), "queries": len(d)}


def encoder_flops_per_token(net) -> float:
    """2 x parameters outside the embedding tables: the multiply-adds one token costs in a
    standard forward (attention's own S^2 terms left out: small at these lengths)."""
    emb = sum(p.numel() for n, p in net.named_parameters() if "embeddings" in n)
    return 2.0 * (sum(p.numel() for p in net.parameters()) - emb)


def gpu_peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --------------------------------------------------------------------------- peers
def sorted_batches(tokenizer, queries, docs, max_length: int, batch_size: int):
    """SERM's harness for a runtime: one tokenizer call, batches sorted by length, each padded to
    its longest pair; yields (row indices, input_ids, attention_mask, token_type_ids) as int64."""
    import numpy as np

    enc = tokenizer(queries, docs, truncation="longest_first", max_length=max_length, padding=False)
    ids, types = enc["input_ids"], enc["token_type_ids"]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = int(lengths[idx].max())
        a = np.full((len(idx), width), tokenizer.pad_token_id, dtype=np.int64)
        t = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            a[row, :lengths[i]] = ids[i]
            t[row, :lengths[i]] = types[i]
        yield idx, a, (np.arange(width) < lengths[idx, None]).astype(np.int64), t


def export_onnx(model, out_dir: Path) -> dict:
    """The model as ONNX graphs for the runtime peers: {name: path}, and {name: reason} for any
    that could not be built."""
    import torch

    graphs, failed = {}, {}
    fp32 = out_dir / "model.onnx"

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.net(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ex = model.tokenizer(["an example query"] * 2, ["an example document, long enough"] * 2, padding=True,
                         return_tensors="pt")
    model.model.eval()
    # The TorchScript exporter: ONNX Runtime's quantizer fails shape inference on the dynamo export.
    torch.onnx.export(Logits(model.model), tuple(ex[n] for n in names), str(fp32), input_names=names,
                      output_names=["logits"], dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names},
                      opset_version=17, dynamo=False)
    graphs["fp32"] = fp32
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = model.model.config
        o2 = optimize_model(str(fp32), model_type="bert", num_heads=cfg.num_attention_heads,
                            hidden_size=cfg.hidden_size, opt_level=2)
        o2.save_model_to_file(str(out_dir / "o2.onnx"))
        graphs["o2"] = out_dir / "o2.onnx"
    except Exception as exc:  # a peer that cannot be built is reported, not fatal
        failed["o2"] = reason(exc)
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out_dir / "int8.onnx"), weight_type=QuantType.QInt8)
        graphs["int8"] = out_dir / "int8.onnx"
        quantize_dynamic(str(fp32), str(out_dir / "int8pc.onnx"), weight_type=QuantType.QInt8, per_channel=True)
        graphs["int8 per-channel"] = out_dir / "int8pc.onnx"
        if "o2" in graphs:   # the fused graph's dtype annotations need the default tensor type
            quantize_dynamic(str(graphs["o2"]), str(out_dir / "o2int8.onnx"), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            graphs["o2 + int8"] = out_dir / "o2int8.onnx"
    except Exception as exc:
        failed["int8"] = reason(exc)
    return {"graphs": graphs, "failed": failed}


def ort_side(path: Path, tokenizer, queries, docs, max_length: int, threads: int):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def run(bs):
        out = np.zeros((len(queries), 4), dtype=np.float32)
        for idx, ids, mask, types in sorted_batches(tokenizer, queries, docs, max_length, bs):
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out[idx] = session.run(None, {k: feed[k] for k in wanted})[0]
        return out
    return run


def openvino_side(path: Path, tokenizer, queries, docs, max_length: int, threads: int, precision: str | None):
    """OpenVINO on the ONNX graph. `precision=None` keeps its default inference precision, which
    is bf16 on a CPU with AVX512_BF16 or AMX (the contender's name says which it chose); "f32"
    asks for fp32."""
    import numpy as np
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    wanted = [p.get_any_name() for p in compiled.inputs]

    def run(bs):
        out = np.zeros((len(queries), 4), dtype=np.float32)
        for idx, ids, mask, types in sorted_batches(tokenizer, queries, docs, max_length, bs):
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out[idx] = request.infer({k: feed[k] for k in wanted})[0]
        return out
    return run, str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").strip("'>")


def flashrank_side(int8_graph: Path, model_dir: Path, work: Path, df, docs, max_length: int):
    """flashrank's Ranker on our int8 graph, placed where its cache-dir layout expects a model it
    ships (it would download otherwise). It re-ranks one query's candidates per call and returns
    softmax(logits)[:, 1] as the score, so its output is not comparable: no fidelity."""
    import json as _json
    import shutil

    from flashrank import Ranker, RerankRequest
    from flashrank.Config import model_file_map

    name = "ms-marco-MiniLM-L-12-v2"
    target = work / "flashrank" / name
    target.mkdir(parents=True)
    shutil.copy(int8_graph, target / model_file_map[name])
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / f, target / f)
    tok_cfg = _json.loads((model_dir / "tokenizer_config.json").read_text())
    special = {k: tok_cfg[k] for k in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token") if k in tok_cfg}
    (target / "special_tokens_map.json").write_text(_json.dumps(special))
    ranker = Ranker(model_name=name, cache_dir=str(work / "flashrank"), max_length=max_length, log_level="WARNING")
    groups = list(df.groupby("query_id", sort=False).indices.values())
    queries = df["query"].tolist()

    def run(_bs):
        for idx in groups:
            ranker.rerank(RerankRequest(query=queries[idx[0]], passages=[{"id": int(i), "text": docs[i]} for i in idx]))
        return None
    return run


def build_sides(args, ours, df, docs, work: Path, threads: int, families=None, built=None):
    """{name: fn(batch_size) -> logits or None}, {name: reason} for peers that could not run, and
    the ONNX graphs built (`built` reuses them). `families` limits the peers to some of
    sentence-transformers, onnxruntime, openvino, flashrank (default: --peers)."""
    from sentence_transformers import CrossEncoder

    queries = df["query"].tolist()
    titles, texts = df["doc_title"].tolist(), df["doc_text"].tolist()
    pairs = list(zip(queries, docs))
    int8 = type(ours)(ours.model, ours.tokenizer, ours.spec.model_copy(update={"precision": "int8"}), "cpu")
    sides = {"serm fp32": lambda bs: ours.logits(queries, titles, texts, batch_size=bs),
             "serm int8": lambda bs: int8.logits(queries, titles, texts, batch_size=bs)}
    failed = {}
    model_dir = work / "model"
    ours.save(model_dir)
    st_kwargs = {"apply_softmax": False, "show_progress_bar": False,
                 "processing_kwargs": {"text": {"truncation": "longest_first"}}}
    wanted = set(families if families is not None else
                 (set(args.peers.split(",")) if args.peers != "all" else {"onnxruntime", "openvino", "flashrank"})
                 | {"sentence-transformers"})
    for backend in ("torch", "onnx", "openvino") if "sentence-transformers" in wanted else ():
        name = f"sentence-transformers ({backend})"
        try:
            st = CrossEncoder(str(model_dir), num_labels=4, max_length=args.max_length, device="cpu", backend=backend)
        except Exception as exc:
            # Its onnx/openvino backends need optimum-onnx / optimum-intel, whose releases pin
            # transformers below SERM's (optimum-onnx 0.1.0: transformers<4.58; SERM: 5.23.0).
            failed[name] = reason(exc) + ("" if backend == "torch" else
                                          " [optimum-onnx/optimum-intel require transformers<4.58; SERM pins 5.23.0]")
            continue
        sides[name] = lambda bs, st=st: st.predict(pairs, batch_size=bs, **st_kwargs)
    if wanted & {"onnxruntime", "openvino", "flashrank"}:
        if built is None:
            try:
                built = export_onnx(ours, work)
            except Exception as exc:
                built = {"graphs": {}, "failed": {"export": reason(exc)}}
        graphs = built["graphs"]
        failed.update({f"onnxruntime {k}": v for k, v in built["failed"].items()})
        if "onnxruntime" in wanted:
            for variant, path in graphs.items():
                sides[f"onnxruntime {variant}"] = ort_side(path, ours.tokenizer, queries, docs, args.max_length, threads)
        if "openvino" in wanted:
            for hint in (None, "f32"):
                try:
                    run, chose = openvino_side(graphs["fp32"], ours.tokenizer, queries, docs, args.max_length,
                                               threads, hint)
                    sides[f"openvino ({'default: ' if hint is None else ''}{chose})"] = run
                except Exception as exc:
                    failed[f"openvino ({hint or 'default'})"] = reason(exc)
        if "flashrank" in wanted:
            try:
                sides["flashrank"] = flashrank_side(graphs["int8"], model_dir, work, df, docs, args.max_length)
            except Exception as exc:
                failed["flashrank"] = reason(exc)
    return sides, failed, built


def time_sides(sides: dict, n: int, bs: int, repeats: int):
    """Median pairs/s per side (warmed up, alternating order) and each side's last output."""
    speeds = {name: [] for name in sides}
    outputs = {}
    for name, fn in sides.items():
        fn(bs)   # warm-up: allocator, kernels, lazy imports, graph compilation
    names = list(sides)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            outputs[name] = sides[name](bs)
            speeds[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(s) for name, s in speeds.items()}, speeds, outputs


def family(side: str) -> str:
    return side.split(" ")[0]


def xquad_english(seed: int):
    """The packaged XQuAD's English questions, each with 2 hard and 4 random negative paragraphs."""
    from serm.data.xquad import candidate_lists, load_paragraphs, load_questions

    q = load_questions()
    return candidate_lists(q[q.locale == "en"], load_paragraphs(), 2, 4, seed=seed)


def long_pairs(n: int, seed: int):
    """English XQuAD question/paragraph pairs (paragraphs run 100-300 tokens), for the length
    axis: short judged pairs never reach max_length 128 or 256."""
    df = xquad_english(seed)
    return df.sample(min(n, len(df)), random_state=seed).reset_index(drop=True)


def sweep(args, ours, df, docs, fastest_peer: str, built, work: Path, threads: int, repeats: int) -> dict:
    """pairs/s of SERM (fp32 and int8) and the fastest peer against batch size (the benchmark's
    first 1,000 pairs at --max-length) and against max_length (1,000 XQuAD pairs, batch 32)."""
    from serm.model.passages import model_inputs

    long_df = long_pairs(1000, args.seed)
    long_docs = model_inputs(long_df["query"].tolist(), long_df["doc_title"].tolist(), long_df["doc_text"].tolist(),
                             "head", ours.spec.window_words)
    out = {"batch_size": {}, "max_length": {}, "tokens_per_pair_mean": {}}
    base = args.max_length
    for axis, values in (("batch_size", [8, 16, 32, 64, 128]), ("max_length", [32, 64, 128, 256])):
        sub, sub_docs = (df.head(1000).reset_index(drop=True), docs[:1000]) if axis == "batch_size" else \
            (long_df, long_docs)
        for v in values:
            ml = v if axis == "max_length" else base
            bs = v if axis == "batch_size" else 32
            args.max_length = ml
            m = type(ours)(ours.model, ours.tokenizer, ours.spec.model_copy(update={"max_length": ml}), "cpu")
            sides, _, _ = build_sides(args, m, sub, sub_docs, Path(tempfile.mkdtemp(dir=work)), threads,
                                      families={family(fastest_peer)}, built=built)
            keep = {k: sides[k] for k in (*SERM_SIDES, fastest_peer) if k in sides}
            med, _, _ = time_sides(keep, len(sub), bs, repeats)
            out[axis][v] = med
            if axis == "max_length":
                out["tokens_per_pair_mean"][v] = float(sum(map(len, m.encode(sub["query"], sub_docs)["input_ids"]))
                                                       / len(sub))
            print(f"  sweep {axis}={v}: " + ", ".join(f"{k} {s:.0f}" for k, s in med.items()), flush=True)
    args.max_length = base
    return out


def plot_sweep(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, axis in zip(axes, ("batch_size", "max_length")):
        xs = sorted(result[axis], key=int)
        for side in next(iter(result[axis].values())):
            ax.plot([int(x) for x in xs], [result[axis][x][side] for x in xs], marker="o", label=side)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (judged pairs, max_length fixed)" if axis == "batch_size"
                      else "max_length, tokens (XQuAD paragraphs, batch 32)")
        ax.set_ylabel("pairs/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="judgments file (default: shared Home Depot, else XQuAD)")
    ap.add_argument("--model", default="builtin:minilm-l6", help="builtin:minilm-l6 or a saved SERM model dir")
    ap.add_argument("--pairs", type=int, default=5000, help="at least this many pairs, in whole queries")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="intra-op threads for every contender (default: torch's choice)")
    ap.add_argument("--peers", default="all", help="all, or a comma list of onnxruntime,openvino,flashrank")
    ap.add_argument("--ndcg-tolerance", type=float, default=0.002,
                    help="a SERM path counts in the ratio line only if its NDCG@4 is within this of fp32's")
    ap.add_argument("--min-spearman", type=float, default=0.99)
    ap.add_argument("--sweep", action="store_true", help="also cost vs batch size and max_length, with a PNG")
    ap.add_argument("--gpu-peak-tflops", type=float, help="bf16 dense peak of the GPU, if not in the table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("SERM_PROGRESS", "off")
    import numpy as np
    import torch
    import transformers

    from serm.model.cross_encoder import RelevanceModel
    from serm.model.passages import model_inputs
    from serm.policy import ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    df, source = load_pairs(args.data, args.pairs, args.seed)
    spec = ModelSpec(max_length=args.max_length, passage="head", batch_size=args.batch_size)
    docs = model_inputs(df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist(), spec.passage,
                        spec.window_words)
    n = len(df)
    torch.manual_seed(args.seed)  # the fresh head of a builtin model
    ours = RelevanceModel.load(args.model, spec, device="cpu")
    # The peers get the network's weights: compare the network alone, and time the lexical head's
    # features (plain Python over the whole document, once per pair) on their own.
    head, ours.lexical = ours.lexical, None
    if head is not None and head.fitted:
        t0 = time.perf_counter()
        head.matrix(df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist())
        print(f"lexical head ({', '.join(head.features)}): features of {len(df)} pairs in "
              f"{time.perf_counter() - t0:.2f}s, not in the table below (the peers have no head)", flush=True)
    tokens = np.array([len(x) for x in ours.encode(df["query"].tolist(), docs)["input_ids"]])
    print(f"{n} pairs ({df.query_id.nunique()} whole queries) from {source}; tokens/pair mean {tokens.mean():.1f}, "
          f"p95 {np.percentile(tokens, 95):.0f}, max {tokens.max()} (max_length {args.max_length}); "
          f"batch {args.batch_size}; torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs", flush=True)

    work = Path(tempfile.mkdtemp(prefix="serm-scoring-"))
    try:
        sides, failed, built = build_sides(args, ours, df, docs, work, threads)
        med, runs, outputs = time_sides(sides, n, args.batch_size, args.repeats)
        ref = outputs[REFERENCE]
        rows = []
        for name in sides:
            fid = fidelity(df, ref, outputs[name], args.seed) if outputs[name] is not None else None
            rows.append({"side": name, "pairs_per_s": med[name], "runs_pairs_per_s": [round(s, 1) for s in runs[name]],
                         "fidelity": fid})
        peers = [r for r in rows if r["side"] not in SERM_SIDES]
        fastest = max(peers, key=lambda r: r["pairs_per_s"])
        eligible = [r for r in rows if r["side"] in SERM_SIDES
                    and abs(r["fidelity"]["ndcg@4_delta"]) <= args.ndcg_tolerance]
        best = max(eligible, key=lambda r: r["pairs_per_s"])
        ratio = best["pairs_per_s"] / fastest["pairs_per_s"]
        st_torch = next((r["fidelity"] for r in rows if r["side"] == "sentence-transformers (torch)"),
                        {"spearman_expected_grade": float("nan")})
        ok = st_torch["spearman_expected_grade"] >= args.min_spearman

        print(f"\n{'contender':<34}{'pairs/s':>9}{'vs fp32':>9}{'Spearman':>10}{'NDCG@4 Δ (95% CI)':>30}   runs")
        for r in sorted(rows, key=lambda r: -r["pairs_per_s"]):
            f = r["fidelity"]
            fid = (f"{f['spearman_expected_grade']:>10.4f}{f['ndcg@4_delta']:>+11.4f} "
                   f"[{f['ndcg@4_delta_ci95'][0]:+.4f}, {f['ndcg@4_delta_ci95'][1]:+.4f}]") if f else \
                f"{'—':>10}{'— (other score)':>30}"
            print(f"{r['side']:<34}{r['pairs_per_s']:>9.1f}{r['pairs_per_s'] / med[REFERENCE]:>8.2f}x{fid}   "
                  f"{r['runs_pairs_per_s']}")
        for name, why in failed.items():
            print(f"{name:<34}{'not run':>9}   {why}")
        ref_fid = next(r for r in rows if r["side"] == REFERENCE)["fidelity"]
        print(f"NDCG@4 of serm fp32: {ref_fid['ndcg@4']:.4f} over {ref_fid['queries']} queries; "
              f"sentence-transformers (torch) vs serm fp32: Spearman {st_torch['spearman_expected_grade']:.5f} "
              f"-> {'OK' if ok else 'FAIL'}")
        print(f"fastest SERM path within ±{args.ndcg_tolerance} NDCG@4: {best['side']} {best['pairs_per_s']:.1f}; "
              f"fastest peer: {fastest['side']} {fastest['pairs_per_s']:.1f}")
        print(f"ratio vs fastest peer: {ratio:.2f}")

        sweep_result = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if args.sweep:
            print("\ncost vs batch size (first 1,000 pairs) and max_length (1,000 XQuAD pairs):")
            sweep_result = sweep(args, ours, df, docs, fastest["side"], built, work, threads, args.repeats)
            png = args.out / f"scoring-sweep-{stamp}.png"
            args.out.mkdir(parents=True, exist_ok=True)
            plot_sweep(sweep_result, png, f"pairs/s on {platform.processor() or platform.machine()}, {threads} threads, "
                                          f"{args.model}; 1,000 pairs per point")
            print(f"wrote {png}")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    gpu = None
    if torch.cuda.is_available():
        flops_token = encoder_flops_per_token(ours.model)
        with tempfile.TemporaryDirectory() as tmp:
            ours.save(Path(tmp) / "model")
            on_gpu = RelevanceModel.load(Path(tmp) / "model", spec.model_copy(update={"batch_size": 256}), device="cuda")
        gpu_side = {"serm bf16 (cuda)": lambda bs: on_gpu.logits(df["query"].tolist(), df["doc_title"].tolist(),
                                                                  df["doc_text"].tolist(), batch_size=bs)}
        gmed, _, _ = time_sides(gpu_side, n, 256, args.repeats)
        name = torch.cuda.get_device_name()
        peak = gpu_peak(name, args.gpu_peak_tflops)
        speed = gmed["serm bf16 (cuda)"]
        achieved = speed * tokens.mean() * flops_token / 1e12
        gpu = {"device": name, "batch_size": 256, "dtype": "bf16 autocast", "pairs_per_s": speed,
               "tflop_per_s": achieved, "bf16_peak_tflops": peak, "fraction_of_peak": achieved / peak if peak else None}
        frac = f"{achieved / peak:.2%} of {peak:.0f} TFLOP/s bf16 peak" if peak else "peak unknown (--gpu-peak-tflops)"
        print(f"GPU {name}: serm {speed:.0f} pairs/s at batch 256; {achieved:.2f} TFLOP/s = {frac}")

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    for mod in ("sentence_transformers", "onnxruntime", "openvino", "flashrank"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    result = {
        "benchmark": "scoring", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv),
        "data": source, "pairs": n, "queries": int(df.query_id.nunique()), "model": args.model,
        "max_length": args.max_length, "batch_size": args.batch_size, "threads": threads, "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
        "tokens_per_pair": {"mean": float(tokens.mean()), "p95": float(np.percentile(tokens, 95)),
                            "max": int(tokens.max())},
        "versions": versions, "reference": REFERENCE, "rows": rows, "not_run": failed,
        "fastest_peer": fastest["side"], "fastest_serm_within_tolerance": best["side"],
        "ndcg_tolerance": args.ndcg_tolerance, "ratio_vs_fastest_peer": ratio,
        "min_spearman": args.min_spearman, "ok": ok, "sweep": sweep_result, "gpu": gpu,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scoring-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
