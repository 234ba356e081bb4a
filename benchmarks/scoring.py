"""Scoring speed: SERM's `RelevanceModel.logits` against sentence-transformers' `CrossEncoder.predict`
on the same weights, the same pairs and the same strings, in one run.

    .venv/bin/python benchmarks/scoring.py                        # 5,000 Home Depot pairs, batch 32
    .venv/bin/python benchmarks/scoring.py --batch-sizes 16,32,64,128   # each side at each size
    .venv/bin/python benchmarks/scoring.py --model path/to/saved/model --data my.parquet

One 4-label cross-encoder is built (the packaged all-MiniLM-L6-v2 with a fresh head, seeded, or a
saved SERM model), saved to a temporary HF directory and loaded from there by
`CrossEncoder(dir, num_labels=4, max_length=...)`. Both sides get the identical (query, document)
strings: the document is `model_inputs(..., passage="head")`, i.e. `title: text` with no
query-biased window, and both truncate the longer side first (`longest_first`) at max_length.
Timings cover the whole call (tokenizing included), each side warmed up first, the sides
alternating over the repeats; the median is reported. The run fails (exit 1) when the two sides'
logits disagree: Spearman below --min-spearman on any of the 4 classes or on the expected grade.

Writes benchmarks/results/scoring-<timestamp>.json. On a CUDA machine it also times SERM on the
GPU (bf16 autocast) and estimates the share of the GPU's bf16 peak it reaches, counting
2 x (encoder parameters without the embedding tables) x (real tokens) FLOPs per pair.
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


def load_pairs(path: Path | None, n: int, seed: int):
    """`n` judged pairs (query, doc_title, doc_text), sampled with `seed`, and where they came from."""
    from serm.data.judgments import load_judgments

    from serm.data import homedepot_path

    if path is None and homedepot_path().exists():
        path = homedepot_path()
    if path is not None:
        df = load_judgments(path)
        source = str(path)
    else:
        from serm.data.xquad import candidate_lists, load_paragraphs, load_questions

        print(f"note: {homedepot_path()} is absent; using the packaged XQuAD (English questions, long paragraphs "
              f"truncated at max_length): pass --data for other pairs")
        q = load_questions()
        df = candidate_lists(q[q.locale == "en"], load_paragraphs(), 2, 4, seed=seed)
        source = "serm/data/xquad (en)"
    if len(df) > n:
        df = df.sample(n, random_state=seed)
    return df.reset_index(drop=True), source


def timed(fn, repeats_done: list, n: int):
    t0 = time.perf_counter()
    out = fn()
    repeats_done.append(n / (time.perf_counter() - t0))
    return out


def spearman_report(ours, st):
    import numpy as np
    from scipy.stats import spearmanr

    def grade(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True) * np.arange(z.shape[1])).sum(axis=1)

    per_class = [float(spearmanr(ours[:, c], st[:, c]).statistic) for c in range(ours.shape[1])]
    return {"per_class": per_class, "min_per_class": min(per_class),
            "expected_grade": float(spearmanr(grade(ours), grade(st)).statistic),
            "max_abs_logit_diff": float(np.abs(ours - st).max())}


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="judgments file (default: shared Home Depot, else XQuAD)")
    ap.add_argument("--model", default="builtin:minilm-l6", help="builtin:minilm-l6 or a saved SERM model dir")
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-sizes", default="32", help="comma-separated; both sides are timed at each")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--with-hf-forward", action="store_true",
                    help="also time SERM with fast_path=False (its batching, the HF forward)")
    ap.add_argument("--compile", action="store_true",
                    help="also time SERM with model.compile (torch.compile of the HF forward; compiles first)")
    ap.add_argument("--min-spearman", type=float, default=0.99)
    ap.add_argument("--gpu-peak-tflops", type=float, help="bf16 dense peak of the GPU, if not in the table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    from serm.model.cross_encoder import RelevanceModel
    from serm.model.passages import model_inputs
    from serm.policy import ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    df, source = load_pairs(args.data, args.pairs, args.seed)
    queries, titles, texts = df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist()
    spec = ModelSpec(max_length=args.max_length, passage="head", batch_size=batch_sizes[0])
    docs = model_inputs(queries, titles, texts, spec.passage, spec.window_words)  # what both sides read
    pairs = list(zip(queries, docs))
    n = len(pairs)

    torch.manual_seed(args.seed)  # the fresh head of a builtin model
    ours = RelevanceModel.load(args.model, spec, device="cpu")
    tokens = np.array([len(x) for x in ours.encode(queries, docs)["input_ids"]])
    with tempfile.TemporaryDirectory() as tmp:
        ours.save(Path(tmp) / "model")
        st = CrossEncoder(str(Path(tmp) / "model"), num_labels=4, max_length=args.max_length, device="cpu")
    same_weights = all(torch.equal(a, b) for a, b in zip(ours.model.state_dict().values(),
                                                         st[0].auto_model.state_dict().values()))
    st_kwargs = {"apply_softmax": False, "show_progress_bar": False,
                 "processing_kwargs": {"text": {"truncation": "longest_first"}}}

    def run_ours(bs, fast=True):
        ours.fast_path = fast
        return ours.logits(queries, titles, texts, batch_size=bs)

    def run_st(bs):
        return st.predict(pairs, batch_size=bs, **st_kwargs)

    sides = {"serm": run_ours, "sentence-transformers": run_st}
    if args.with_hf_forward:
        sides["serm (HF forward)"] = lambda bs: run_ours(bs, fast=False)
    if args.compile:
        compiled = RelevanceModel(ours.model, ours.tokenizer, spec.model_copy(update={"compile": True}), "cpu")
        sides["serm (torch.compile)"] = lambda bs: compiled.logits(queries, titles, texts, batch_size=bs)
    flops_token = encoder_flops_per_token(ours.model)
    print(f"{n} pairs from {source}; tokens/pair mean {tokens.mean():.1f}, p95 {np.percentile(tokens, 95):.0f}, "
          f"max {tokens.max()} (max_length {args.max_length}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; same weights: {same_weights}")

    rows, logits = [], {}
    for bs in batch_sizes:
        for name in sides:  # warm-up on 256 pairs: allocator, kernels, lazy imports
            sub = slice(0, min(n, 256))
            if name == "sentence-transformers":
                st.predict(pairs[sub], batch_size=bs, **st_kwargs)
            elif name == "serm (torch.compile)":
                compiled.logits(queries[sub], titles[sub], texts[sub], batch_size=bs)
            else:
                ours.fast_path = name == "serm"
                ours.logits(queries[sub], titles[sub], texts[sub], batch_size=bs)
        speeds = {name: [] for name in sides}
        names = list(sides)
        for r in range(args.repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                logits[(name, bs)] = timed(lambda: sides[name](bs), speeds[name], n)
        for name in names:
            rows.append({"side": name, "batch_size": bs, "pairs_per_s": statistics.median(speeds[name]),
                         "runs_pairs_per_s": [round(s, 1) for s in speeds[name]]})
    ours.fast_path = True

    agree = spearman_report(logits[("serm", batch_sizes[0])], logits[("sentence-transformers", batch_sizes[0])])
    ok = agree["min_per_class"] >= args.min_spearman and agree["expected_grade"] >= args.min_spearman

    for row in rows:
        row["gflop_per_s"] = row["pairs_per_s"] * tokens.mean() * flops_token / 1e9
    best = {name: max((r for r in rows if r["side"] == name), key=lambda r: r["pairs_per_s"]) for name in sides}
    same_bs = {bs: {r["side"]: r["pairs_per_s"] for r in rows if r["batch_size"] == bs} for bs in batch_sizes}
    ratios = {str(bs): v["serm"] / v["sentence-transformers"] for bs, v in same_bs.items()}
    best_ratio = best["serm"]["pairs_per_s"] / best["sentence-transformers"]["pairs_per_s"]

    print(f"\n{'side':<24}{'batch':>6}{'pairs/s':>10}{'GFLOP/s':>9}   runs")
    for r in rows:
        print(f"{r['side']:<24}{r['batch_size']:>6}{r['pairs_per_s']:>10.1f}{r['gflop_per_s']:>9.1f}   "
              f"{r['runs_pairs_per_s']}")
    for bs, ratio in ratios.items():
        print(f"serm / sentence-transformers at batch {bs}: {ratio:.2f}x")
    if len(batch_sizes) > 1:
        print(f"best vs best: serm {best['serm']['pairs_per_s']:.1f} (batch {best['serm']['batch_size']}) / "
              f"sentence-transformers {best['sentence-transformers']['pairs_per_s']:.1f} "
              f"(batch {best['sentence-transformers']['batch_size']}) = {best_ratio:.2f}x")
    print(f"Spearman serm vs sentence-transformers logits (batch {batch_sizes[0]}): per class "
          f"{', '.join(f'{s:.5f}' for s in agree['per_class'])}; expected grade {agree['expected_grade']:.5f}; "
          f"max |logit diff| {agree['max_abs_logit_diff']:.2e} -> {'OK' if ok else 'FAIL'}")

    gpu = None
    if torch.cuda.is_available():
        with tempfile.TemporaryDirectory() as tmp:
            ours.save(Path(tmp) / "model")
            on_gpu = RelevanceModel.load(Path(tmp) / "model", spec, device="cuda")
        bs = max(batch_sizes)
        on_gpu.logits(queries[:256], titles[:256], texts[:256], batch_size=bs)
        speeds = []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            timed(lambda: on_gpu.logits(queries, titles, texts, batch_size=bs), speeds, n)
        name = torch.cuda.get_device_name()
        peak = gpu_peak(name, args.gpu_peak_tflops)
        achieved = statistics.median(speeds) * tokens.mean() * flops_token / 1e12
        gpu = {"device": name, "batch_size": bs, "dtype": "bf16 autocast", "pairs_per_s": statistics.median(speeds),
               "tflop_per_s": achieved, "bf16_peak_tflops": peak,
               "fraction_of_peak": achieved / peak if peak else None}
        frac = f"{achieved / peak:.2%} of {peak:.0f} TFLOP/s bf16 peak" if peak else "peak unknown (--gpu-peak-tflops)"
        print(f"GPU {name}: serm {gpu['pairs_per_s']:.0f} pairs/s at batch {bs}; {achieved:.2f} TFLOP/s = {frac}")

    result = {
        "benchmark": "scoring", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv),
        "data": source, "pairs": n, "model": args.model, "max_length": args.max_length,
        "tokens_per_pair": {"mean": float(tokens.mean()), "p95": float(np.percentile(tokens, 95)),
                            "max": int(tokens.max())},
        "flops_per_pair_formula": "2 x non-embedding parameters x real tokens",
        "flops_per_pair": float(tokens.mean() * flops_token), "same_weights": same_weights,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "device": "cpu", "repeats": args.repeats,
        "st_call": f"CrossEncoder.predict(pairs, batch_size=B, {', '.join(f'{k}={v!r}' for k, v in st_kwargs.items())})",
        "serm_call": "RelevanceModel.logits(queries, titles, texts, batch_size=B) with passage='head'",
        "rows": rows, "ratio_at_same_batch": ratios, "best_vs_best": best_ratio,
        "spearman": agree, "min_spearman": args.min_spearman, "ok": ok, "gpu": gpu,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scoring-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
