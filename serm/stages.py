"""The stages of an evolution round, as plain functions over a workspace and a policy.

The Kubeflow components in `pipelines/` are thin wrappers around these; so is `serm evolve`
for the parts that run before the pipeline (ingest, drift, trigger). Every stage writes its
outputs into the round's staging folder (`.serm/rounds/rNNNN/<stage>/`) and marks itself done
in the round manifest, so an interrupted round resumes where it stopped and nothing touches
`data/` (the versioned production state) before the final promotion step.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from serm.data import pair_keys, without_pairs
from serm.errors import CheckFailed, DataError
from serm.workspace import Workspace, atomic_write_json, copy_tree, write_parquet

STAGES = ["ingest", "drift", "mine", "annotate", "check", "train", "evaluate", "promote"]


# --------------------------------------------------------------------------- manifest
class Manifest:
    """Per-stage status, timings and outputs of one round (staging/manifest.json)."""

    def __init__(self, ws: Workspace, round_no: int):
        self.path = ws.staging(round_no) / "manifest.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {
            "round": round_no, "stages": {}, "started": _now()}

    def done(self, stage: str) -> bool:
        return self.data["stages"].get(stage, {}).get("status") == "done"

    def mark(self, stage: str, status: str, **info) -> None:
        entry = self.data["stages"].setdefault(stage, {})
        entry.update(status=status, at=_now(), **info)
        atomic_write_json(self.path, self.data)

    def set(self, **info) -> None:
        self.data.update(info)
        atomic_write_json(self.path, self.data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_stage(ws: Workspace, round_no: int, stage: str, fn, log=print):
    """Run `fn()` unless the manifest says the stage is done; record status and wall time."""
    m = Manifest(ws, round_no)
    if m.done(stage):
        log(f"[{stage}] already done in this round, reusing its outputs")
        return m.data["stages"][stage].get("result")
    m.mark(stage, "running")
    log(f"[{stage}] started (round {round_no})")  # a crash can be placed (and seen) per stage
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:
        Manifest(ws, round_no).mark(stage, "failed", error=str(exc)[:2000], seconds=round(time.perf_counter() - t0, 1))
        raise
    Manifest(ws, round_no).mark(stage, "done", seconds=round(time.perf_counter() - t0, 1), result=result)
    return result


def _log_default(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- helpers
def load_model(path: Path, policy):
    from serm.model.cross_encoder import RelevanceModel

    return RelevanceModel.load(path, policy.model, device=policy.training.device)


def read_parquet(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


def all_labels(ws: Workspace):
    """Every trainable label committed so far (accepted + human-resolved)."""
    import pandas as pd

    files = sorted((ws.data / "labels").glob("r*.parquet"))
    if not files:
        return pd.DataFrame(columns=["query_id", "doc_id", "grade", "round"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def score_frame_stats(df):
    """Per-query frame for drift: descriptors + top score + engagement."""
    import numpy as np

    g = df.groupby("query_id", sort=False)
    out = g.agg(query=("query", "first"), locale=("locale", "first"), score=("score", "max"),
                impressions=("clicked", "size"), clicks=("clicked", "sum")).reset_index()
    out["ctr"] = out["clicks"] / out["impressions"]
    clicked = df[df["clicked"]]
    mpos = clicked.groupby("query_id")["position"].mean()
    out["mean_click_position"] = out["query_id"].map(mpos).astype(float)
    out.loc[out["mean_click_position"].isna(), "mean_click_position"] = np.nan
    return out


# --------------------------------------------------------------------------- bootstrap
def bootstrap(ws: Workspace, policy, log=_log_default) -> dict:
    """First version: seed + test sets from the shipped data, the seed model (v0) trained on
    the gold-graded seed set, documents and the seed queries' stream (batch 0) in Feast."""
    from serm import featurestore, simulation
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import set_seed, train

    t0 = time.perf_counter()
    log("[init] building seed and test sets from the shipped XQuAD data")
    seed = simulation.seed_set(policy)
    tests = simulation.test_sets(policy)
    write_parquet(seed, ws.data / "seed" / "train.parquet")
    write_parquet(tests, ws.data / "test" / "test.parquet")
    from serm.data import xquad

    docs = xquad.documents()
    now = datetime.now(timezone.utc)
    featurestore.ingest_documents(ws.root, docs, now)

    log(f"[init] training the seed model on {len(seed)} gold pairs ({policy.data.seed_locale}), "
        f"base {policy.model.base_model}")
    set_seed(policy.seed)  # the fresh head starts from the same weights every init
    model = RelevanceModel.load(policy.model.base_model, policy.model, device=policy.training.device)
    result = train(model, seed, policy.training, policy.seed, epochs=policy.training.seed_epochs, log=log)
    metrics = evaluate_model(model, tests, policy, policy.data.seed_locale, policy.data.stream_locales[0])

    # Batch 0: the seed queries as production serves them: the drift reference.
    from serm.data.stream import simulate_clicks, validate_events

    scores = model.score_frame(seed)
    events = simulate_clicks(seed, model.expected_grade(scores), policy.data.clicks, 0, policy.seed, now)
    v = validate_events(events, set(docs.doc_id))
    featurestore.ingest_events(ws.root, v.valid, now)
    ev = v.valid.merge(seed[["query_id", "doc_id"]].assign(score=model.expected_grade(scores)), on=["query_id", "doc_id"])
    write_parquet(score_frame_stats(ev), ws.data / "seed" / "query_frame.parquet")

    lineage = {"version": 0, "parent": None, "round": 0, "policy_hash": policy.hash(),
               "base_model": policy.model.base_model, "trained_on": {"seed_pairs": len(seed)},
               "training": result.to_dict()}
    model.save(ws.model_dir, metrics=metrics, lineage=lineage)
    atomic_write_json(ws.state_path, {"rounds_done": 0, "next_batch": 1, "production": 0,
                                      "production_round": 0, "policy": policy.name})
    log(f"[init] seed model v0: static ndcg@4 {metrics['static']['ndcg@4']}, "
        f"{policy.data.stream_locales[0]} ndcg@4 {metrics['evolving']['ndcg@4']} ({time.perf_counter() - t0:.0f}s)")
    return {"metrics": metrics, "training": result.to_dict()}


def evaluate_model(model, tests, policy, static_locale: str, evolving_locale: str) -> dict:
    """Metrics on the static test (seed locale) and the evolving test (newest batch's locale)."""
    from serm.evaluation import evaluate

    ks = tuple(policy.evaluation.k)
    static = evaluate(model, tests[tests.locale == static_locale], ks)
    evolving = evaluate(model, tests[tests.locale == evolving_locale], ks)
    return {"static": {**static["overall"], "locale": static_locale},
            "evolving": {**evolving["overall"], "locale": evolving_locale}}


# --------------------------------------------------------------------------- ingest + drift
def serve_batch(ws: Workspace, policy, batch_no: int):
    """Stream batch `batch_no` as production serves it: the production model ranks each
    query's candidates, clicks come from the click model, rows are validated. Writes nothing.
    Returns (locale, the validation result, the per-query drift frame, the serving time)."""
    from serm import simulation
    from serm.data import xquad
    from serm.data.stream import simulate_clicks, validate_events

    cands = simulation.batch_candidates(policy, batch_no)
    if cands is None:
        raise DataError(f"the stream is exhausted: batch {batch_no} has no queries left; "
                        "add locales to data.stream_locales or lower data.queries_per_batch")
    locale, _ = simulation.batch_plan(policy, batch_no)
    model = load_model(ws.model_dir, policy)
    proba = model.score_frame(cands)
    score = model.expected_grade(proba)
    now = datetime.now(timezone.utc)
    events = simulate_clicks(cands, score, policy.data.clicks, batch_no, policy.seed, now)
    docs = xquad.documents()
    v = validate_events(events, set(docs.doc_id))
    served = v.valid.merge(cands[["query_id", "doc_id"]].assign(score=score), on=["query_id", "doc_id"], how="left")
    return locale, v, score_frame_stats(served), now


def stage_ingest(ws: Workspace, policy, round_no: int, batch_no: int, log=_log_default) -> dict:
    """Serve the next stream batch with the production model, log clicks, validate rows
    (quarantine), write the batch to staging and its features to Feast."""
    from serm import featurestore

    stage = ws.staging(round_no) / "ingest"
    locale, v, frame, now = serve_batch(ws, policy, batch_no)
    write_parquet(v.valid, stage / "events.parquet")
    write_parquet(v.quarantined, stage / "quarantine.parquet")
    write_parquet(frame, stage / "query_frame.parquet")
    counts = featurestore.ingest_events(ws.root, v.valid, now)
    log(f"[ingest] batch {batch_no} ({locale}): {v.counts['valid']} events "
        f"({v.counts['quarantined']} quarantined), {counts['pairs']} query-document pairs")
    return {"batch": batch_no, "locale": locale, **v.counts, "pairs": counts["pairs"],
            "queries": counts["queries"], "ingested_at": now.isoformat()}


def reference_frame(ws: Workspace):
    """What the production model was trained on: the seed stream plus every batch up to the
    production model's round."""
    import pandas as pd

    prod_round = ws.state().get("production_round", 0)
    frames = [pd.read_parquet(ws.data / "seed" / "query_frame.parquet")]
    for r in range(1, prod_round + 1):
        f = ws.round_dir(r) / "query_frame.parquet"
        if f.exists():
            frames.append(pd.read_parquet(f))
    return pd.concat(frames, ignore_index=True)


def stage_drift(ws: Workspace, policy, round_no: int, new_pairs: int, log=_log_default) -> dict:
    """Drift of the ingested batch vs the reference and the trigger decision (policy
    drift.trigger, with cooldown and rounds per period over the committed rounds); the drift
    report goes to staging and the workspace's Evidently project."""
    from monitoring.dashboard import evidently_path
    from monitoring.drift import batch_drift, format_verdicts

    ing = Manifest(ws, round_no).data["stages"].get("ingest", {}).get("result") or {}
    cur = read_parquet(ws.staging(round_no) / "ingest" / "query_frame.parquet")
    result, record = batch_drift(ws, policy, cur, new_pairs, ws.staging(round_no) / "drift",
                                 evidently_workspace=evidently_path(ws), batch_name=f"round {round_no}",
                                 metadata={"round": str(round_no), "batch": str(ing.get("batch")),
                                           "locale": str(ing.get("locale"))})
    log("[drift]\n" + format_verdicts(result))
    log(f"[drift] trigger: {'yes' if record['trigger'] else 'no'} — {record['reason']}")
    return record


# --------------------------------------------------------------------------- mine
def stream_pairs(ws: Workspace, round_no: int):
    """Unique (query, document) pairs of the batch with text and Feast pair features."""
    from serm import featurestore
    from serm.data import xquad

    events = read_parquet(ws.staging(round_no) / "ingest" / "events.parquet")
    pairs = events.groupby(["query_id", "doc_id"], sort=False).agg(
        query=("query", "first"), locale=("locale", "first")).reset_index()
    feats = featurestore.online_features(ws.root, "pair_features", pairs[["query_id", "doc_id"]])
    for col in ("impressions", "clicks", "mean_position", "mean_dwell_s"):
        pairs[col] = feats[col].to_numpy()
    docs = xquad.documents().set_index("doc_id")
    pairs["doc_title"] = pairs["doc_id"].map(docs["title"])
    pairs["doc_text"] = pairs["doc_id"].map(docs["text"])
    return pairs


def training_queries(ws: Workspace) -> list[str]:
    """Queries the production model was trained on: the seed set's and those of labels from
    rounds up to the production model's round (text from each round's mined candidates)."""
    prod_round = ws.state().get("production_round", 0)
    queries = set(read_parquet(ws.data / "seed" / "train.parquet")["query"])
    labels = all_labels(ws)
    for r in sorted({int(r) for r in labels["round"]} if len(labels) else ()):
        f = ws.round_dir(r) / "candidates.parquet"
        if r <= prod_round and f.exists():
            cands = read_parquet(f)[["query_id", "query"]]
            queries.update(cands.loc[cands.query_id.isin(set(labels.loc[labels["round"] == r, "query_id"])), "query"])
    return sorted(queries)


def version_model_dir(ws: Workspace, version: int, tag: str) -> Path:
    """An earlier version's model directory, restored once from DVC (the tag's `data/model`)
    into `.serm/models/vN` (derived state, outside versions)."""
    import shutil

    from dvc.api import DVCFileSystem

    out = ws.dot / "models" / f"v{version}"
    if not (out / "config.json").exists():
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        fs = DVCFileSystem(str(ws.root), rev=tag)
        try:
            fs.get("data/model", str(tmp), recursive=True)
        finally:
            fs.close()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def model_versions(ws: Workspace, policy):
    """Every recorded model version, loadable on demand; production from `data/model`."""
    from serm.mining.base import ModelVersions

    production = ws.state()["production"]
    loaders = {production: lambda: load_model(ws.model_dir, policy)}
    for entry in ws.versions()["versions"]:
        v, tag = entry["version"], entry.get("tag")
        if v != production and tag:
            loaders[v] = lambda v=v, tag=tag: load_model(version_model_dir(ws, v, tag), policy)
    return ModelVersions(production=production, loaders=loaders)


def stage_mine(ws: Workspace, policy, round_no: int, out_dir: Path, log=_log_default, pairs=None,
               proba=None) -> dict:
    """Mine the batch. `pairs` (as `stream_pairs` returns them) and `proba` (the production
    model's (n, 4) probabilities in that order, NaN rows unscored) come from the caller when the
    scoring pass ran elsewhere (the cluster pipeline scores shards in parallel); by default the
    pairs are read through Feast and scored here, once each."""
    from serm.mining.base import MiningContext
    from serm.mining.combine import mine

    t0 = time.perf_counter()
    pairs = stream_pairs(ws, round_no) if pairs is None else pairs
    events = read_parquet(ws.staging(round_no) / "ingest" / "events.parquet")[["query_id", "doc_id", "position", "clicked"]]
    ctx = MiningContext(pairs=pairs, events=events, reference_queries=training_queries(ws),
                        models=model_versions(ws, policy), proba=proba)
    labelled = set(zip(*[all_labels(ws)[c] for c in ("query_id", "doc_id")]))
    cands, report = mine(ctx, policy.mining, round_no, labelled)  # scores each pair once, shared by all agents
    cands = cands.merge(pairs, on=["query_id", "doc_id", "locale"], how="left")
    write_parquet(cands, out_dir / "candidates.parquet")
    report.update(seconds=round(time.perf_counter() - t0, 1))
    atomic_write_json(out_dir / "mining_report.json", report)
    passes = report["forward_passes"]
    log(f"[mine] {report['stream_pairs']} stream pairs, {report['scored_pairs']} scored "
        f"({report.get('pairs_per_second')} pairs/s, +{passes['committee']} committee passes); "
        f"agents picked {report['per_agent']}; selected {report['selected']} (budget {policy.mining.budget})")
    return report


# --------------------------------------------------------------------------- annotate
def model_loader(ws: Workspace, policy):
    """`ref -> RelevanceModel` for agents that grade with a model (the teacher): a workspace
    version (`v3`), or a model directory (relative paths from the workspace). Each model is
    loaded once."""
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.refs import model_source

    loaded: dict = {}

    def load(ref: str):
        if ref not in loaded:
            where = ws.root / ref
            with model_source(str(where) if where.is_dir() else ref, ws.root) as src:
                loaded[ref] = RelevanceModel.load(src.path, src.spec(policy.model), device=policy.training.device)
        return loaded[ref]

    return load


def audit_frame(ws: Workspace, intra_min_share: float):
    """Every earlier level-1 grade of a pair a human graded: agent, grade, human_grade. The
    `weighted` vote's `human_audit` reliabilities are measured on it."""
    import pandas as pd

    from serm.annotation.agreement import level1

    frames = []
    for rdir in sorted((ws.data / "rounds").glob("r*")):
        vf, lf = rdir / "votes.parquet", rdir / "labels.parquet"
        if not (vf.exists() and lf.exists()):
            continue
        labels = read_parquet(lf)
        humans = labels.loc[labels.status == "human", ["query_id", "doc_id", "grade"]].rename(columns={"grade": "human_grade"})
        if len(humans):
            l1 = level1(read_parquet(vf), intra_min_share)
            frames.append(l1[l1.agent != "human"].merge(humans, on=["query_id", "doc_id"])[["agent", "grade", "human_grade"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["agent", "grade", "human_grade"])


def stage_annotate(ws: Workspace, policy, round_no: int, candidates_path: Path, out_dir: Path,
                   log=_log_default) -> dict:
    import pandas as pd

    from serm import simulation
    from serm.annotation import escalations
    from serm.annotation.annotate import REVIEWED, agent_accuracy, annotate
    from serm.annotation.base import AnnotationContext
    from serm.annotation.cache import VoteCache
    from serm.annotation.human import SimulatedHuman
    from serm.data import xquad

    spec = policy.annotation
    cands = read_parquet(candidates_path)
    events = read_parquet(ws.staging(round_no) / "ingest" / "events.parquet")[["query_id", "doc_id", "position", "clicked"]]
    resolved = escalations.read_resolved(ws.data)
    ctx = AnnotationContext(pairs=cands, documents=xquad.documents(), seed=policy.seed + round_no, events=events,
                            resolved=resolved, models=model_loader(ws, policy))
    truth = simulation.hidden_grade(policy)   # the simulated reviewer's, and the diagnostics below
    human = SimulatedHuman(spec.human.budget, truth)
    audits = audit_frame(ws, spec.agreement.intra_min_share) if spec.agreement.reliability == "human_audit" else None
    cache = VoteCache(ws.dot / "cache" / "votes.sqlite") if spec.cache else None
    try:
        votes, labels, open_esc, report = annotate(ctx, spec, round_no, policy.hash(), human, log, cache, audits)
    finally:
        if cache is not None:
            cache.close()
    # Reviewer grades imported since the last round train now, mined again or not.
    waiting = escalations.pending(resolved)
    waiting = without_pairs(waiting, pair_keys(labels))
    if len(waiting):
        labels = pd.concat([labels, pd.DataFrame({
            "query_id": waiting.query_id, "doc_id": waiting.doc_id, "grade": waiting.grade.astype("Int8"),
            "agreement": 1.0, "status": "human", "agents": [f"human={int(g)}" for g in waiting.grade],
            "why": REVIEWED, "round": round_no, "policy_hash": policy.hash()})], ignore_index=True)
    report["human_resolved"] = int((labels.status == "human").sum())
    report["reviewer_resolutions_trained"] = int((labels.why == REVIEWED).sum())
    # Simulation-only diagnostic: how right were the accepted labels? (never used by the pipeline)
    acc = labels[labels.status == "accepted"]
    if len(acc):
        hidden = [truth(q, d) for q, d in zip(acc.query_id, acc.doc_id)]
        report["simulation_accepted_label_accuracy"] = round(float((acc["grade"].astype(int).to_numpy() == hidden).mean()), 4)
    report["simulation_agent_accuracy"] = agent_accuracy(votes, spec.agreement.intra_min_share, truth)
    write_parquet(votes, out_dir / "votes.parquet")
    write_parquet(labels, out_dir / "labels.parquet")
    write_parquet(escalations.queue_rows(open_esc, cands, round_no), out_dir / "escalations.parquet")
    atomic_write_json(out_dir / "annotation_report.json", report)
    atomic_write_json(out_dir / "cost_ledger.json", {"round": round_no, "cost": report["cost"],
                                                     "tokens": report["tokens"], "agents": report["ledger"]})
    log(f"[annotate] {report['candidates']} candidates: {report['accepted']} accepted, "
        f"{report['human_resolved']} resolved by people ({report['reviewer_resolutions_trained']} from imported reviews, "
        f"the rest by the simulated reviewer), {report['escalated_open']} escalated and open, {report['rejected']} rejected; "
        f"{report['cached_votes']} votes from the cache, cost {report['cost']}")
    return {k: report[k] for k in ("candidates", "accepted", "human_resolved", "escalated_open", "rejected",
                                   "cached_votes", "cost", "tokens")}


# --------------------------------------------------------------------------- check
def trainable(labels):
    return labels[labels.status.isin(["accepted", "human"])].copy()


def stage_check(ws: Workspace, policy, labels_path: Path, out_dir: Path, log=_log_default) -> dict:
    import json

    import pandas as pd

    from serm.checks import check_labels
    from serm.data import xquad

    labels = read_parquet(labels_path)
    train_rows = trainable(labels)
    escalated = int((labels.status == "escalated").sum())
    known_q = set(xquad.load_questions().query_id)
    known_d = set(xquad.load_paragraphs().doc_id)
    cols = ["query_id", "doc_id", "grade", "agreement", "status", "round", "policy_hash"]
    ann_report = labels_path.parent / "annotation_report.json"
    abstention = json.loads(ann_report.read_text()).get("level1_abstention") if ann_report.exists() else None
    history = pd.concat([read_parquet(ws.data / "seed" / "train.parquet")["grade"], all_labels(ws)["grade"]],
                        ignore_index=True).dropna().astype(int)
    report = check_labels(train_rows[cols], known_q, known_d, policy.checks, escalated=escalated,
                          out_path=out_dir / "label_checks.json", abstention=abstention, history_grades=history)
    n_ok = sum(r["success"] for r in report.results)
    log(f"[check] Great Expectations: {n_ok}/{len(report.results)} expectations met on {len(train_rows)} labels")
    report.raise_for_failure()
    return {"success": True, "expectations": len(report.results), "labels": int(len(train_rows))}


# --------------------------------------------------------------------------- train
def training_examples(ws: Workspace, policy, new_labels, round_no: int):
    """New trainable labels + replayed earlier labels (seed set included), with text read
    through Feast's historical retrieval (row counts checked there)."""
    import numpy as np
    import pandas as pd

    from serm import featurestore

    new = trainable(new_labels)[["query_id", "doc_id", "grade"]]
    seed = read_parquet(ws.data / "seed" / "train.parquet")[["query_id", "doc_id", "grade"]]
    old = pd.concat([seed, all_labels(ws)[["query_id", "doc_id", "grade"]]], ignore_index=True)
    n_replay = min(len(old), int(round(policy.training.replay_ratio * max(1, len(new)))))
    rng = np.random.default_rng([policy.seed, round_no])
    replay = old.iloc[rng.choice(len(old), n_replay, replace=False)] if n_replay else old.iloc[0:0]
    ex = pd.concat([new.assign(source="new"), replay.assign(source="replay")], ignore_index=True)
    ex["grade"] = ex["grade"].astype("int64")
    ex["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    feats = featurestore.historical_features(
        ws.root, ex[["query_id", "doc_id", "event_timestamp"]],
        ["query_features:query", "document_features:title", "document_features:text"])
    ex["query"] = feats["query"].to_numpy()
    ex["doc_title"] = feats["title"].to_numpy()
    ex["doc_text"] = feats["text"].to_numpy()
    return ex


def stage_train(ws: Workspace, policy, round_no: int, labels_path: Path, out_dir: Path, log=_log_default) -> dict:
    from serm.model.training import train

    labels = read_parquet(labels_path)
    ex = training_examples(ws, policy, labels, round_no)
    log(f"[train] fine-tuning production v{ws.state()['production']} on {int((ex.source == 'new').sum())} new + "
        f"{int((ex.source == 'replay').sum())} replayed labels")
    model = load_model(ws.model_dir, policy)
    result = train(model, ex, policy.training, policy.seed + round_no, log=log)
    lineage = {"parent": ws.state()["production"], "round": round_no, "policy_hash": policy.hash(),
               "trained_on": {"new_labels": int((ex.source == "new").sum()),
                              "replayed": int((ex.source == "replay").sum())},
               "training": result.to_dict()}
    model.save(out_dir, lineage=lineage)
    return {"pairs": result.pairs, "seconds": result.seconds, "best_epoch": result.best_epoch,
            "train_loss": result.train_loss, "val_loss": result.val_loss, "device": result.device}


# --------------------------------------------------------------------------- evaluate
def stage_evaluate(ws: Workspace, policy, round_no: int, model_dir: Path, out_dir: Path, log=_log_default) -> dict:
    tests = read_parquet(ws.data / "test" / "test.parquet")
    locale = Manifest(ws, round_no).data["stages"]["ingest"]["result"]["locale"]
    cand = evaluate_model(load_model(model_dir, policy), tests, policy, policy.data.seed_locale, locale)
    prod = evaluate_model(load_model(ws.model_dir, policy), tests, policy, policy.data.seed_locale, locale)
    metrics = {"candidate": cand, "production": prod}
    atomic_write_json(out_dir / "metrics.json", metrics)
    m = policy.promotion.metric
    log(f"[evaluate] {m}: static {prod['static'][m]} -> {cand['static'][m]}, "
        f"evolving ({locale}) {prod['evolving'][m]} -> {cand['evolving'][m]}")
    return metrics


def promotion_decision(metrics: dict, spec) -> tuple[bool, str]:
    m = spec.metric
    cand, prod = metrics["candidate"], metrics["production"]
    gain = cand["evolving"][m] - prod["evolving"][m]
    static_drop = prod["static"][m] - cand["static"][m]
    if gain < spec.min_gain:
        return False, f"evolving {m} gain {gain:+.4f} < min_gain {spec.min_gain}"
    if static_drop > spec.max_static_regression:
        return False, f"static {m} fell {static_drop:.4f} > max_static_regression {spec.max_static_regression}"
    return True, f"evolving {m} {gain:+.4f} (>= {spec.min_gain}), static change {-static_drop:+.4f}"


# --------------------------------------------------------------------------- promote + commit
def recover(ws: Workspace, log=_log_default) -> None:
    """Undo a promotion interrupted before its commit: committed `data.dvc`/`versions.json`
    and the `data/` they describe are the truth. Also finishes what a kill between the
    commit and its tag left (the tag), and drops the DVC cache objects that only the
    interrupted `dvc add` wrote, so the cache holds what it held before the round."""
    from serm import versioning

    versioning.clear_stale_git_lock(ws, log)
    dirty = versioning.git(ws, "status", "--porcelain", "--", "data.dvc", "versions.json")
    orphans: set[str] = set()
    if dirty:
        log("[recover] an interrupted promotion left uncommitted version files; restoring the committed ones")
        orphans |= versioning.uncommitted_objects(ws)
        versioning.restore_version_files(ws)
    if not versioning.clean(ws):
        log("[recover] data/ differs from data.dvc (interrupted round); restoring the committed version")
        orphans |= versioning.uncommitted_objects(ws)
        versioning.restore_committed(ws)
    if orphans:
        removed = versioning.prune_cache(ws, orphans)
        if removed:
            log(f"[recover] removed {removed} DVC cache object(s) that only the interrupted promotion wrote")
    for tag in versioning.restore_missing_tags(ws):
        log(f"[recover] the promotion was committed but not tagged; tagged it {tag}")


def update_escalations(ws: Workspace, round_no: int, labels, round_escalations) -> None:
    """The workspace queue gains the round's open escalations and loses every pair the round
    labelled; reviewer resolutions the round trained on are marked with its number."""
    from serm.annotation import escalations

    labelled = set(zip(*[trainable(labels)[c] for c in ("query_id", "doc_id")]))
    queue = escalations.read_queue(ws.data)
    queue = without_pairs(queue, labelled)
    queue = escalations.merge_queue(queue, round_escalations)
    resolved = escalations.read_resolved(ws.data)
    if len(resolved):
        humans = set(zip(*[labels.loc[labels.status == "human", c] for c in ("query_id", "doc_id")]))
        now = resolved["trained_round"].isna() & [k in humans for k in zip(resolved.query_id, resolved.doc_id)]
        resolved.loc[now, "trained_round"] = round_no
        write_parquet(resolved, escalations.resolved_path(ws.data))
    if len(queue) or escalations.queue_path(ws.data).exists():
        write_parquet(queue, escalations.queue_path(ws.data))


def finish_round(ws: Workspace, policy, round_no: int, promote: bool, reason: str,
                 model_dir: Path | None, metrics: dict | None, log=_log_default) -> dict:
    """Move the round's keepers from staging into `data/`, then version them (one commit; a
    tag when a model is promoted). Production changes only here, and only all at once."""
    import shutil

    from monitoring.dashboard import update_dashboard
    from serm import versioning
    from serm.report import write_round_report

    t0 = time.perf_counter()
    stage = ws.staging(round_no)
    state = ws.state()
    rdir = ws.round_dir(round_no)
    log(f"[promote] moving round {round_no}'s outputs into data/ (undone by the next run if this one dies)")
    rdir.mkdir(parents=True, exist_ok=True)
    keep = {"ingest": ["events.parquet", "quarantine.parquet", "query_frame.parquet"],
            "drift": ["drift.html", "drift.json"],
            "mine": ["candidates.parquet", "mining_report.json"],
            "annotate": ["votes.parquet", "labels.parquet", "escalations.parquet", "annotation_report.json",
                         "cost_ledger.json"],
            "check": ["label_checks.json"], "evaluate": ["metrics.json"]}
    for sub, names in keep.items():
        for name in names:
            src = stage / sub / name
            if src.exists():
                shutil.copy2(src, rdir / name)
    labels_file = rdir / "labels.parquet"
    if labels_file.exists():
        update_escalations(ws, round_no, read_parquet(labels_file), read_parquet(rdir / "escalations.parquet"))
        write_parquet(trainable(read_parquet(labels_file)), ws.data / "labels" / f"r{round_no:04d}.parquet")

    tag = None
    new_state = dict(state, rounds_done=round_no, next_batch=state["next_batch"] + 1)
    if promote:
        version = versioning.next_version(ws)
        tmp = ws.data / ".model.new"
        copy_tree(model_dir, tmp)
        lineage = json.loads((tmp / "lineage.json").read_text())
        lineage.update(version=version, dataset_round=round_no)
        atomic_write_json(tmp / "lineage.json", lineage)
        atomic_write_json(tmp / "metrics.json", metrics["candidate"])
        shutil.rmtree(ws.model_dir)
        tmp.rename(ws.model_dir)
        new_state.update(production=version, production_round=round_no)
        tag = policy.versioning.tag.format(n=version)
        versioning.record_version(ws, {"version": version, "tag": tag, "round": round_no, "parent": state["production"],
                                       "metrics": metrics["candidate"], "policy_hash": policy.hash(), "created": _now()})
    atomic_write_json(ws.state_path, new_state)
    m = Manifest(ws, round_no)
    m.set(promoted=promote, reason=reason, tag=tag, finished=_now())
    shutil.copy2(m.path, rdir / "manifest.json")
    write_round_report(ws, round_no, rdir)
    update_dashboard(ws, log)  # the Evidently UI project (derived state in .serm/, never fails the round)
    msg = (f"serm: round {round_no} promoted v{new_state['production']} ({reason})" if promote
           else f"serm: round {round_no} kept v{state['production']} ({reason})")
    log(f"[version] dvc add + push of data/, then the git commit{' and tag ' + tag if tag else ''}")
    sha = versioning.commit_version(ws, msg, tag)
    log(f"[version] {msg} — commit {sha[:10]}" + (f", tag {tag}" if tag else "")
        + f" (outputs, report, dashboard and version in {time.perf_counter() - t0:.0f}s)")
    return {"commit": sha, "tag": tag, "production": new_state["production"]}
