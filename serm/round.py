"""The round runner: the one owner of a round's manifest, resume, recovery, the trigger and
promotion decisions, and the promote and keep sequences.

A round, in order (each stage's inputs and outputs are files named in `serm.schema`; the
runner reads the inputs, calls the pure function in `serm.stages`, writes the outputs):

    stage     reads                                  writes (staging/<stage>/)
    ingest    the stream batch, production model     events, quarantine, query_frame   + Feast
    drift     query_frame, the committed reference   drift.html, drift.json            + Evidently
    ──── trigger decision (`trigger_decision`) ──── no: `keep` commits the batch and its report
    mine      events + Feast pair features           candidates, mining_report
    annotate  candidates, events, reviews            votes, labels, escalations, annotation_report, cost_ledger
    check     labels                                 label_checks (a failure stops the round)
    train     labels + replayed history via Feast    the candidate model (HF directory)
    evaluate  candidate + production models, tests   metrics (candidate and production)
    promote   metrics → `stages.decide`              data/rounds/rNNNN/, data/model, one DVC version + tag

Adapters only move artifacts and call this runner: `serm evolve` (in-process, or the kfp.local
pipeline injected by the CLI), `pipelines/runtime.py` (kfp.local components),
`pipelines/cluster_runtime.py` (one clone per step) and `serm bench` (the pure stages on
in-memory worlds). Nothing in `data/` changes before `finish`, and `finish` changes it all at
once: a failed or interrupted round leaves production as it was, and `recover` undoes a
half-written promotion before anything else runs.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from serm import history, progress, schema, stages
from serm.files import atomic_write_json, copy_tree, read_parquet, write_parquet
from serm.schema import LabelStatus, RoundManifest, RoundMetrics
from serm.sources import open_source


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def trigger_decision(drift: dict, force: bool) -> dict:
    """Whether the round goes on past drift: the trigger fired, or the caller forced it."""
    forced = bool(force and not drift["trigger"])
    return {"run_pipeline": bool(drift["trigger"] or force), "forced_by_cli": forced,
            "reason": f"forced; the trigger said: {drift['reason']}" if forced else drift["reason"]}


class RoundRunner:
    """Round `round_no` of workspace `ws` under `policy`."""

    def __init__(self, ws, policy, round_no: int, log=_log_default):
        self.ws, self.policy, self.round_no, self.log = ws, policy, round_no, log
        self._documents = None
        self.workspace = schema.WorkspaceLayout(ws.root)
        self.layout = self.workspace.round(round_no)

    @cached_property
    def source(self):
        """The policy's data source (`serm.sources`), opened when a stage first needs it."""
        return open_source(self.policy)

    def documents(self):
        """The workspace's catalogue, read once per runner (data/ changes only at commit)."""
        if self._documents is None:
            self._documents = history.documents(self.ws, fallback=self.source.documents)
        return self._documents

    # ------------------------------------------------------------------ manifest + resume
    @property
    def manifest(self) -> RoundManifest:
        """Read fresh each time: kfp.local and cluster steps write it from other processes."""
        return RoundManifest.open(self.layout.manifest, self.round_no)

    def record(self, **info) -> RoundManifest:
        return self.manifest.update(**info)

    def run(self, stage: str, fn):
        """Run `fn()` unless the manifest says `stage` is done; record status and wall time."""
        m = self.manifest
        if m.done(stage):
            self.log(f"[{stage}] already done in this round, reusing its outputs")
            return m.entry(stage).result
        m.mark(stage, "running")
        self.log(f"[{stage}] started (round {self.round_no})")  # a crash can be placed (and seen) per stage
        t0 = time.perf_counter()
        try:
            with progress.stage(stage):
                result = fn()
        except Exception as exc:
            self.manifest.mark(stage, "failed", error=str(exc)[:2000], seconds=round(time.perf_counter() - t0, 1))
            raise
        self.manifest.mark(stage, "done", seconds=round(time.perf_counter() - t0, 1), result=result)
        return result

    def begin(self, batch_no: int, policy_ref: str, base: str) -> bool:
        """Start the round, or resume it; a round whose policy or base commit changed since it
        started is started over. Returns whether it resumed."""
        man = self.manifest
        restart = ("the policy changed" if man.policy_hash not in (None, self.policy.hash()) else
                   "the workspace has a new commit (a rollback or an import)" if man.base not in (None, base) else None)
        if restart:
            self.log(f"[round {self.round_no}] {restart} since this round started; restarting the round")
            shutil.rmtree(self.layout.staging)
        resumed = bool(self.manifest.stages)
        self.record(batch=batch_no, policy=policy_ref, policy_hash=self.policy.hash(), base=base)
        return resumed

    def out(self, stage: str) -> Path:
        d = self.layout.stage_dir(stage)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------------ ingest + drift
    def ingest(self, batch_no: int) -> dict:
        return self.run("ingest", lambda: self._ingest(batch_no))

    def _ingest(self, batch_no: int) -> dict:
        from serm import featurestore

        served, locale, now = serve_batch(self.ws, self.policy, batch_no)
        write_parquet(served.events, self.layout.staged(schema.EVENTS))
        write_parquet(served.quarantine, self.layout.staged(schema.QUARANTINE))
        write_parquet(served.frame, self.layout.staged(schema.QUERY_FRAME))
        counts = featurestore.ingest_events(self.ws.root, served.events, now)
        self.log(f"[ingest] {self.source.kind} batch {batch_no} ({locale}): {served.counts['valid']} events "
                 f"({served.counts['quarantined']} quarantined), {counts['pairs']} query-document pairs")
        return {"batch": batch_no, "locale": locale, **served.counts, "pairs": counts["pairs"],
                "queries": counts["queries"], "ingested_at": now.isoformat()}

    def drift(self, new_pairs: int) -> dict:
        return self.run("drift", lambda: self._drift(new_pairs))

    def _drift(self, new_pairs: int) -> dict:
        from monitoring.dashboard import evidently_path, project_name
        from monitoring.drift import batch_drift, format_verdicts

        ing = self.manifest.ingest
        cur = read_parquet(self.layout.staged(schema.QUERY_FRAME))
        result, record = batch_drift(history.reference_frame(self.ws), history.round_history(self.ws), self.policy,
                                     cur, new_pairs, self.out("drift"), evidently_workspace=evidently_path(self.ws),
                                     batch_name=f"round {self.round_no}", project=project_name(self.ws),
                                     metadata={"round": str(self.round_no), "batch": str(ing.get("batch")),
                                               "locale": str(ing.get("locale"))})
        self.log("[drift]\n" + format_verdicts(result))
        self.log(f"[drift] trigger: {'yes' if record['trigger'] else 'no'} — {record['reason']}")
        return record

    def decide_trigger(self, drift: dict, force: bool) -> dict:
        decision = trigger_decision(drift, force)
        if decision["forced_by_cli"]:
            self.log("[drift] forced: running the round although the trigger did not fire")
        self.record(decision=decision)
        return decision

    # ------------------------------------------------------------------ mine
    def stream_pairs(self, events=None):
        """The batch's pairs with their text and Feast pair features (`events`: the batch's
        events; by default this round's ingested ones)."""
        from serm import featurestore

        events = read_parquet(self.layout.staged(schema.EVENTS)) if events is None else events
        return stages.stream_pairs(events, lambda keys: featurestore.online_features(self.ws.root, "pair_features", keys),
                                   self.documents())

    def _in(self, folder: Path | None, art: schema.Artifact) -> Path:
        return Path(folder) / art.name if folder is not None else self.layout.staged(art)

    def mine(self, batch: Path | None = None, pairs=None, proba=None) -> dict:
        return self.run("mine", lambda: self._mine(batch, pairs, proba))

    def _mine(self, batch, pairs, proba) -> dict:
        from serm.mining.base import MiningContext

        events = read_parquet(self._in(batch, schema.EVENTS))
        pairs = self.stream_pairs(events) if pairs is None else pairs
        # A test query is never mined: neither one of a test set nor one this round asks reviewers to label.
        test_ids = history.test_query_ids(self.ws)
        tests = self._test_requests(events, test_ids)
        never = test_ids | (set() if tests is None else set(tests.query_id))
        pairs = pairs[~pairs.query_id.isin(never)]
        ctx = MiningContext(pairs=pairs, events=events[list(schema.IMPRESSION_COLUMNS)], reference_queries=history.training_queries(self.ws),
                            models=history.model_versions(self.ws, self.policy), proba=proba)
        cands, report = stages.mine(ctx, self.policy.mining, self.round_no, history.labelled_pairs(self.ws))
        write_parquet(cands, self.layout.staged(schema.CANDIDATES))
        atomic_write_json(self.layout.staged(schema.MINING_REPORT), report)
        passes = report["forward_passes"]
        self.log(f"[mine] {report['stream_pairs']} stream pairs, {report['scored_pairs']} scored "
                 f"({report.get('pairs_per_second')} pairs/s, +{passes['committee']} committee passes); "
                 f"agents picked {report['per_agent']}; selected {report['selected']} (budget {self.policy.mining.budget})")
        return report

    def _test_requests(self, events, test_ids: set | None = None):
        """The whole queries of this batch reviewers are asked to label for the evolving test
        (files source; None when simulated): drawn at random from the batch's queries before
        mining, so the test set samples the traffic, not what the miners leave over. A pure
        function of the batch, the committed history and the seed: mine (which excludes them)
        and annotate (which queues them) draw the same. `test_ids`: history.test_query_ids, when
        the caller has read them already."""
        if self.source.simulated:
            return None
        spec = self.policy.annotation.human
        test_ids = history.test_query_ids(self.ws) if test_ids is None else test_ids
        exclude = test_ids | {q for q, _ in history.labelled_pairs(self.ws)}
        return stages.test_requests(events, self.documents(), int(spec.budget * spec.test_share), exclude,
                                    seed=[self.policy.seed, self.round_no])

    # ------------------------------------------------------------------ annotate
    def annotate(self, candidates: Path, batch: Path | None = None) -> dict:
        return self.run("annotate", lambda: self._annotate(Path(candidates), batch))

    def _annotate(self, candidates: Path, batch) -> dict:
        from serm.annotation import escalations
        from serm.annotation.base import AnnotationContext
        from serm.annotation.cache import VoteCache

        policy, spec, r = self.policy, self.policy.annotation, self.round_no
        cands = read_parquet(candidates)
        all_events = read_parquet(self._in(batch, schema.EVENTS))
        events = all_events[list(schema.IMPRESSION_COLUMNS)]
        reviews = escalations.read_resolved(self.ws.data)
        documents = self.documents()
        labelled = self._calibration_pairs(reviews, documents) \
            if spec.agreement.tune is not None \
            or any(a.params().get("calibration") == "learned" for a in spec.agents) else None
        ctx = AnnotationContext(pairs=cands, documents=documents, seed=policy.seed + r, events=events,
                                resolved=reviews, models=history.model_loader(self.ws, policy), labelled=labelled)
        truth = self.source.truth()    # simulation only: the simulated reviewer's, and the diagnostics
        # A files source has no simulated reviewer: its human grades come from imported reviews,
        # and part of the human budget asks reviewers for test labels.
        human = self.source.reviewer(spec.human.budget)
        tests = self._test_requests(all_events)
        audits = history.audit_frame(self.ws, spec.agreement.intra_min_share) \
            if spec.agreement.reliability == "human_audit" else None
        cache = VoteCache(self.workspace.vote_cache) if spec.cache else None
        try:
            votes, labels, open_esc, report = stages.annotate(
                ctx, spec, r, policy.hash(), human, self.log, cache, audits,
                reviews=escalations.pending(reviews), truth=truth)
        finally:
            if cache is not None:
                cache.close()
        write_parquet(votes, self.layout.staged(schema.VOTES))
        write_parquet(labels, self.layout.staged(schema.LABELS))
        queue = escalations.queue_rows(open_esc, cands, r)
        if tests is not None and len(tests):
            import pandas as pd

            queue = pd.concat([queue, escalations.queue_rows(tests, tests, r, schema.TEST)], ignore_index=True)
        report["test_requests"] = {"pairs": 0 if tests is None else int(len(tests)),
                                   "queries": 0 if tests is None else int(tests.query_id.nunique())}
        write_parquet(queue, self.layout.staged(schema.ESCALATIONS))
        atomic_write_json(self.layout.staged(schema.ANNOTATION_REPORT), report)
        atomic_write_json(self.layout.staged(schema.COST_LEDGER), stages.cost_ledger(r, report))
        simulated = ", the rest by the simulated reviewer" if human is not None else ""
        asked = report["test_requests"]
        self.log(f"[annotate] {report['candidates']} candidates: {report['accepted']} accepted, "
                 f"{report['human_resolved']} resolved by people ({report['reviewer_resolutions_trained']} from "
                 f"imported reviews{simulated}), {report['escalated_open']} escalated and "
                 f"open, {report['rejected']} rejected; {report['cached_votes']} votes from the cache, "
                 f"cost {report['cost']}" + (f"; {asked['pairs']} pairs of {asked['queries']} queries asked of "
                                             "reviewers as test labels" if asked["pairs"] else ""))
        return {k: report[k] for k in ("candidates", "accepted", "human_resolved", "escalated_open", "rejected",
                                       "cached_votes", "cost", "tokens", "test_requests")}

    # ------------------------------------------------------------------ check
    def check(self, labels: Path, annotation_report: Path | None = None) -> dict:
        return self.run("check", lambda: self._check(Path(labels), annotation_report))

    def _check(self, labels_path: Path, annotation_report: Path | None) -> dict:
        from serm.annotation import escalations

        labels = read_parquet(labels_path)
        rep = Path(annotation_report) if annotation_report else labels_path.with_name(schema.ANNOTATION_REPORT.name)
        abstention = json.loads(rep.read_text()).get("level1_abstention") if rep.exists() else None
        # A label names a query the stream showed: this batch's, or an earlier one a reviewer graded.
        events = self.layout.staged(schema.EVENTS)
        shown = set(read_parquet(events, columns=["query_id"])["query_id"]) if events.exists() else set(labels.query_id)
        shown |= set(escalations.read_resolved(self.ws.data)["query_id"])
        report = stages.check(labels, shown, set(self.documents().doc_id),
                              self.policy.checks, abstention=abstention, history_grades=history.grade_history(self.ws),
                              out_path=self.layout.staged(schema.LABEL_CHECKS))
        n_ok = sum(r["success"] for r in report.results)
        n = int(len(schema.trainable(labels)))
        self.log(f"[check] Great Expectations: {n_ok}/{len(report.results)} expectations met on {n} labels")
        report.raise_for_failure()
        return {"success": True, "expectations": len(report.results), "labels": n}

    # ------------------------------------------------------------------ train
    def _calibration_pairs(self, reviews, documents):
        """The seed set plus every pair people graded so far (earlier rounds' human labels and
        imported reviews; test queries never), with query text from Feast."""
        import pandas as pd

        from serm import featurestore

        keys = ["query_id", "doc_id", "grade"]
        labels = history.all_labels(self.ws)
        human = labels[labels["status"] == LabelStatus.HUMAN][keys] if "status" in labels.columns else None
        graded = pd.concat([x for x in (human, reviews[keys] if len(reviews) else None) if x is not None],
                           ignore_index=True) if (human is not None or len(reviews)) else pd.DataFrame(columns=keys)
        graded = graded[graded["grade"].notna() & ~graded["query_id"].isin(history.test_query_ids(self.ws))]
        graded = graded.drop_duplicates(["query_id", "doc_id"], keep="last").reset_index(drop=True)
        if len(graded):
            rows = graded.assign(event_timestamp=pd.Timestamp.now(tz="UTC"))
            feats = featurestore.historical_features(self.ws.root, rows[["query_id", "doc_id", "event_timestamp"]],
                                                     ["query_features:query"])
            graded["query"] = feats["query"].to_numpy()
            graded = graded[graded["query"].notna()]
        return stages.calibration_pairs(history.seed_set(self.ws), graded, documents)

    def training_examples(self, new_labels):
        """New trainable labels + replayed earlier labels (seed set included), with text read
        through Feast's historical retrieval (row counts checked there)."""
        import pandas as pd

        from serm import featurestore

        keys = ["query_id", "doc_id", "grade"]
        new = schema.trainable(new_labels)[keys]
        old = pd.concat([history.seed_set(self.ws)[keys], history.all_labels(self.ws)[keys]], ignore_index=True)
        ex = stages.replay(new, old, stages.replay_count(self.policy.training.replay_ratio, len(new)),
                           [self.policy.seed, self.round_no])
        events = self.layout.staged(schema.EVENTS)
        if self.policy.training.unclicked_negatives.max_per_query and events.exists():
            skips = stages.skip_negatives(read_parquet(events), self.policy.training.unclicked_negatives,
                                          exclude=history.labelled_pairs(self.ws) | set(zip(ex.query_id, ex.doc_id)))
            ex = pd.concat([ex, skips.assign(source="skip")], ignore_index=True)
        never = history.test_query_ids(self.ws)   # a test query never reaches training, whatever labelled it
        ex = ex[~ex.query_id.isin(never)].reset_index(drop=True)
        ex["event_timestamp"] = pd.Timestamp.now(tz="UTC")
        feats = featurestore.historical_features(
            self.ws.root, ex[["query_id", "doc_id", "event_timestamp"]],
            ["query_features:query", "document_features:title", "document_features:text"])
        ex["query"] = feats["query"].to_numpy()
        ex["doc_title"] = feats["title"].to_numpy()
        ex["doc_text"] = feats["text"].to_numpy()
        return ex

    def train(self, labels: Path, out: Path | None = None) -> dict:
        out = Path(out) if out else self.out("train")
        return self.run("train", lambda: self._train(Path(labels), out))

    def _train(self, labels_path: Path, out: Path) -> dict:
        ex = self.training_examples(read_parquet(labels_path))
        production = self.ws.state()["production"]
        n_new, n_replay, n_skip = (int((ex.source == k).sum()) for k in ("new", "replay", "skip"))
        self.log(f"[train] fine-tuning production v{production} on {n_new} new + {n_replay} replayed labels"
                 + (f" + {n_skip} skipped impressions as grade 0" if n_skip else ""))
        model = history.load_model(self.ws.model_dir, self.policy)
        result = stages.train(model, ex, self.policy.training, self.policy.seed + self.round_no, log=self.log)
        lineage = {"parent": production, "round": self.round_no, "policy_hash": self.policy.hash(),
                   "trained_on": {"new_labels": n_new, "replayed": n_replay, "skip_negatives": n_skip}, "training": result.to_dict()}
        model.save(out, lineage=lineage)
        return {"pairs": result.pairs, "seconds": result.seconds, "best_epoch": result.best_epoch,
                "train_loss": result.train_loss, "val_loss": result.val_loss, "device": result.device}

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, model_dir: Path) -> dict:
        return self.run("evaluate", lambda: self._evaluate(Path(model_dir)))

    def _evaluate(self, model_dir: Path) -> dict:
        from serm.model.cross_encoder import pick_device
        from serm.model.score_cache import ScoreCache, model_key as score_cache_key

        p = self.policy
        locale = self.manifest.locale
        ks = p.evaluation.k
        sets, locales = self.source.round_tests(self.ws, locale)
        # Production was scored on these sets when it was the candidate (same weights, same
        # pairs): the score cache gives its scores back, so mostly only the candidate is scored.
        cache = ScoreCache(self.ws.layout.score_cache)
        device = pick_device(p.training.device)
        out, per_query = {}, {}
        m = p.promotion.metric
        for who, path in (("candidate", model_dir), ("production", self.ws.model_dir)):
            key, lazy = score_cache_key(path, p.model, device), LazyModel(path, p)
            before = cache.hits, cache.misses
            probas = {name: cache.proba(j, key, lazy.score) for name, j in sets.items() if len(j)}
            per_query[who] = {name: stages.per_query(sets[name], proba, m) for name, proba in probas.items()}
            out[who] = stages.evaluate(None, sets, ks, m, locales, probas=probas)
            hits, misses = cache.hits - before[0], cache.misses - before[1]
            self.log(f"[evaluate] {who}: {misses} pair(s) scored, {hits} from the score cache")
        cand, prod = out["candidate"], out["production"]
        baselines = stages.baselines(sets, self.documents(), ks, m, locales)
        paired = stages.paired(per_query["candidate"], per_query["production"], p.promotion.alpha)
        metrics = RoundMetrics(cand, prod, baselines, paired).to_dict()
        atomic_write_json(self.layout.staged(schema.METRICS), metrics)
        self.log(f"[evaluate] {m}: static {prod.get('static', m)} -> {cand.get('static', m)}, "
                 f"evolving ({locale}) {prod.get('evolving', m)} -> {cand.get('evolving', m)}")
        self.log("[evaluate] candidate − production, paired over queries: " + "; ".join(
            f"{name} {c['delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] p={c['p_value']:.4f} ({c['verdict']})"
            for name, c in ((s, paired[s]) for s in schema.TEST_SETS if s in paired)))
        self.log(f"[evaluate] baselines {m}: " + "; ".join(
            f"{name} static {b.get('static', m)}, evolving {b.get('evolving', m)}" for name, b in baselines.items()))
        return metrics

    # ------------------------------------------------------------------ promote / keep
    def promote(self, model_dir: Path, metrics: Path | dict) -> dict:
        """Decide on the candidate's metrics and commit the round (promoting or keeping)."""
        raw = metrics if isinstance(metrics, dict) else json.loads(Path(metrics).read_text())
        decision = stages.decide(RoundMetrics.from_dict(raw, self.policy.promotion.metric), self.policy.promotion)
        self.log(f"[promote] {'promote' if decision.promote else 'keep production'}: {decision.reason}")
        self.run("promote", decision.to_dict)
        return self.finish(decision.promote, decision.reason, Path(model_dir), raw)

    def keep(self) -> dict:
        """The round without the pipeline (no trigger): its batch and drift report are committed."""
        reason = self.manifest.drift["reason"]
        self.run("promote", lambda: {"promote": False, "reason": reason})
        return self.finish(False, f"no trigger: {reason}", None, None)

    def run_pipeline(self) -> dict:
        """mine → annotate → check → train → evaluate → promote in this process (what the
        kfp.local pipeline runs, one component per stage)."""
        lay = self.layout
        self.mine()
        self.annotate(lay.staged(schema.CANDIDATES))
        self.check(lay.staged(schema.LABELS))
        self.train(lay.staged(schema.LABELS))
        self.evaluate(lay.stage_dir("train"))
        return self.promote(lay.stage_dir("train"), lay.staged(schema.METRICS))

    def finish(self, promote: bool, reason: str, model_dir: Path | None, metrics: dict | None) -> dict:
        """Move the round's keepers from staging into `data/`, then version them (one commit; a
        tag when a model is promoted). Production changes only here, and only all at once."""
        from monitoring.dashboard import update_dashboard
        from serm import versioning
        from serm.report import write_round_report

        ws, lay = self.ws, self.layout
        t0 = time.perf_counter()
        state = ws.state()
        self.log(f"[promote] moving round {self.round_no}'s outputs into data/ (undone by the next run if this one dies)")
        lay.committed.mkdir(parents=True, exist_ok=True)
        for art in schema.ARTIFACTS:
            src = lay.staged(art)
            if art.committed and src.exists():
                shutil.copy2(src, lay.kept(art))
        if lay.kept(schema.DRIFT_HTML).exists():   # the report loads Evidently's JS from data/_evidently/
            from monitoring.drift_report import ensure_report_lib

            ensure_report_lib(ws.data)
        labels_file = lay.kept(schema.LABELS)
        if labels_file.exists():
            labels = read_parquet(labels_file)
            update_escalations(ws, self.round_no, labels, read_parquet(lay.kept(schema.ESCALATIONS)))
            write_parquet(schema.trainable(labels), self.workspace.round_labels(self.round_no))

        tag = None
        new_state = dict(state, rounds_done=self.round_no, next_batch=state["next_batch"] + 1)
        if promote:
            version = versioning.next_version(ws)
            candidate = metrics["candidate"]
            tmp = ws.data / ".model.new"
            copy_tree(model_dir, tmp)
            lineage = json.loads((tmp / schema.MODEL_LINEAGE).read_text())
            lineage.update(version=version, dataset_round=self.round_no)
            atomic_write_json(tmp / schema.MODEL_LINEAGE, lineage)
            atomic_write_json(tmp / schema.MODEL_METRICS, candidate)
            shutil.rmtree(ws.model_dir)
            tmp.rename(ws.model_dir)
            new_state.update(production=version, production_round=self.round_no)
            tag = self.policy.versioning.tag.format(n=version)
            versioning.record_version(ws, {"version": version, "tag": tag, "round": self.round_no,
                                           "parent": state["production"], "metrics": candidate,
                                           "policy_hash": self.policy.hash(), "created": schema.now_iso()})
        atomic_write_json(ws.state_path, new_state)
        m = self.record(promoted=promote, reason=reason, tag=tag, finished=schema.now_iso())
        shutil.copy2(m.path, lay.committed_manifest)
        write_round_report(ws, self.round_no, lay.committed)
        msg = (f"serm: round {self.round_no} promoted v{new_state['production']} ({reason})" if promote
               else f"serm: round {self.round_no} kept v{state['production']} ({reason})")
        versioning.failpoint("promote:moved")
        self.log(f"[version] dvc add + push of data/, then the git commit{' and tag ' + tag if tag else ''}")
        sha = versioning.commit_version(ws, msg, tag)
        # The Evidently UI project follows commits only (derived state in .serm/, never fails the round).
        update_dashboard(ws, self.log)
        self.log(f"[version] {msg} — commit {sha[:10]}" + (f", tag {tag}" if tag else "")
                 + f" (outputs, report, dashboard and version in {time.perf_counter() - t0:.0f}s)")
        return {"commit": sha, "tag": tag, "production": new_state["production"]}


class LazyModel:
    """A model directory loaded on its first `score` (a fully cached evaluation loads nothing)."""

    def __init__(self, path: Path, policy):
        self.path, self.policy, self._model = Path(path), policy, None

    def score(self, frame):
        if self._model is None:
            self._model = history.load_model(self.path, self.policy)
        return self._model.score_frame(frame)


# --------------------------------------------------------------------------- serving a batch
def serve_batch(ws, policy, batch_no: int, now: datetime | None = None):
    """Stream batch `batch_no` as production serves it (the policy's source: a simulated
    world's candidates and clicks, or an ingested log batch). Writes nothing. Returns
    (Served, locale, now)."""
    source = open_source(policy)
    now = now or datetime.now(timezone.utc)
    documents = history.documents(ws, fallback=source.documents)
    served, locale = source.batch(ws, batch_no, history.load_model(ws.model_dir, policy), documents, now)
    return served, locale, now


# --------------------------------------------------------------------------- bootstrap
def bootstrap(ws, policy, log=_log_default) -> dict:
    """First version from the policy's source: documents, seed and test sets into `data/`, the
    seed model (v0) trained on the graded seed set, documents and the seed queries as served
    (batch 0: the drift reference) in Feast."""
    from serm import featurestore
    from serm.data.stream import validate_events
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import set_seed

    lay = schema.WorkspaceLayout(ws.root)
    source = open_source(policy)
    t0 = time.perf_counter()
    log(f"[init] building the documents, seed and test sets from the {source.kind} source")
    first = source.first_data()
    seed, docs = first.seed, first.documents
    write_parquet(docs, lay.documents)
    write_parquet(seed, lay.seed_train)
    write_parquet(first.tests, lay.tests)
    now = datetime.now(timezone.utc)
    featurestore.ingest_documents(ws.root, docs, now)

    log(f"[init] training the seed model on {len(seed)} graded pairs ({seed.query_id.nunique()} queries), "
        f"base {policy.model.base_model}")
    set_seed(policy.seed)  # the fresh head starts from the same weights every init
    model = RelevanceModel.load(policy.model.base_model, policy.model, device=policy.training.device)
    result = stages.train(model, seed, policy.training, policy.seed, epochs=policy.training.seed_epochs, log=log)
    first_group = source.first_group(seed)
    sets, locales = source.round_tests(ws, first_group)
    m = stages.evaluate(model, sets, policy.evaluation.k, policy.promotion.metric, locales)
    metrics = m.to_dict()

    # Batch 0: the seed queries as production serves them: the drift reference.
    score = model.expected_grade(model.score_frame(seed))
    v = validate_events(source.seed_events(seed, score, now), set(docs.doc_id))
    featurestore.ingest_events(ws.root, v.valid, now)
    served = v.valid.merge(seed[["query_id", "doc_id"]].assign(score=score), on=["query_id", "doc_id"])
    frame = stages.query_frame(served)
    if not source.simulated:   # nobody clicked on a judged set: no engagement to drift from
        frame[["ctr", "mean_click_position"]] = float("nan")
    write_parquet(frame, lay.seed_query_frame)

    lineage = {"version": 0, "parent": None, "round": 0, "policy_hash": policy.hash(),
               "base_model": policy.model.base_model, "trained_on": {"seed_pairs": len(seed)},
               "training": result.to_dict()}
    model.save(ws.model_dir, metrics=metrics, lineage=lineage)
    atomic_write_json(ws.state_path, {"rounds_done": 0, "next_batch": 1, "production": 0,
                                      "production_round": 0, "policy": policy.name, "source": source.kind})
    evolving = m.get(schema.EVOLVING, "ndcg@4")
    first = f"{first_group} ndcg@4 {evolving}" if evolving is not None else \
        "no evolving test yet (it grows from reviewed test requests)"
    log(f"[init] seed model v0: static ndcg@4 {m.get(schema.STATIC, 'ndcg@4')}, {first} "
        f"({time.perf_counter() - t0:.0f}s)")
    return {"metrics": metrics, "training": result.to_dict()}


# --------------------------------------------------------------------------- recovery
def recover(ws, log=_log_default) -> None:
    """Undo a promotion interrupted before its commit: committed `data.dvc`/`versions.json`
    and the `data/` they describe are the truth. Also finishes what a kill between the
    commit and its tag left (the tag), and drops the DVC cache objects that only the
    interrupted `dvc add` wrote, so the cache holds what it held before the round."""
    from serm import versioning

    versioning.clear_stale_git_lock(ws, log)
    dirty = versioning.git(ws, "status", "--porcelain", "--", *schema.VERSION_FILES)
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
    stage = versioning.restore_stage(ws)
    if stage:
        log(f"[recover] the committed production was not GTO's production; assigned it ({stage})")


def update_escalations(ws, round_no: int, labels, round_escalations) -> None:
    """The workspace queue gains the round's open escalations and loses every pair the round
    labelled; reviewer resolutions the round trained on are marked with its number."""
    from serm.annotation import escalations
    from serm.data import without_pairs

    labelled = set(zip(*[schema.trainable(labels)[c] for c in schema.PAIR_KEY]))
    queue = escalations.read_queue(ws.data)
    queue = without_pairs(queue, labelled)
    queue = escalations.merge_queue(queue, round_escalations)
    reviews = escalations.read_resolved(ws.data)
    if len(reviews):
        humans = set(zip(*[labels.loc[labels.status == LabelStatus.HUMAN, c] for c in schema.PAIR_KEY]))
        now = reviews["trained_round"].isna() & [k in humans for k in zip(reviews.query_id, reviews.doc_id)]
        reviews.loc[now, "trained_round"] = round_no
        write_parquet(reviews, escalations.resolved_path(ws.data))
    if len(queue) or escalations.queue_path(ws.data).exists():
        write_parquet(queue, escalations.queue_path(ws.data))
