"""The stages of an evolution round, as pure functions: data and their own policy section in,
data out. None reads the round manifest, walks a workspace or writes a file; the round runner
(`serm.round`) gathers their inputs, calls them, and writes what they return where
`serm.schema` says. The same functions run in a unit test, under kfp.local, on a cluster and
in `serm bench`.

    stage      takes                                       returns
    serve      model, candidate lists, policy.data.clicks   Served: events, quarantine, per-query frame
    mine       MiningContext (pairs, scores, events, …),    candidates, mining report
               policy.mining
    annotate   candidates' AnnotationContext,               votes, labels, open escalations, report
               policy.annotation
    check      labels, known ids, history, policy.checks    CheckReport (raises CheckFailed)
    replay     new + earlier labels, replay ratio           training examples
    train      examples, model, policy.training             TrainResult (the model trained in place)
    evaluate   model, named test sets, ks                   Metrics (flat per test set)
    baselines  named test sets, documents, ks               {bm25, bi_encoder: Metrics}
    decide     RoundMetrics, policy.promotion               Decision
"""

from __future__ import annotations

from dataclasses import dataclass

from serm import schema
from serm.data import pair_keys, without_pairs
from serm.schema import LabelStatus, Metrics, RoundMetrics


# --------------------------------------------------------------------------- serve (ingest)
@dataclass
class Served:
    """A stream batch as production served it."""

    events: "object"          # valid events (schema.EVENT_COLUMNS)
    quarantine: "object"      # rejected rows with their reason
    frame: "object"           # per-query drift frame (`query_frame`)
    counts: dict              # valid / quarantined / … (serm.data.stream.ValidatedEvents.counts)


def query_frame(served):
    """Per-query frame for drift: locale, top score, impressions, clicks, CTR, mean click position.
    `served`: events with the production model's `score` of each pair."""
    import numpy as np

    g = served.groupby("query_id", sort=False)
    out = g.agg(query=("query", "first"), locale=("locale", "first"), score=("score", "max"),
                impressions=("clicked", "size"), clicks=("clicked", "sum")).reset_index()
    out["ctr"] = out["clicks"] / out["impressions"]
    clicked = served[served["clicked"]]
    mpos = clicked.groupby("query_id")["position"].mean()
    out["mean_click_position"] = out["query_id"].map(mpos).astype(float)
    out.loc[out["mean_click_position"].isna(), "mean_click_position"] = np.nan
    return out


def serve(model, candidates, clicks_spec, batch_no: int, seed: int, now, known_doc_ids: set) -> Served:
    """The production model ranks each query's candidates, clicks come from the click model on
    the hidden grades (simulation), every row is validated (bad rows quarantined with a reason)."""
    from serm.data.stream import simulate_clicks, validate_events

    score = model.expected_grade(model.score_frame(candidates))
    events = simulate_clicks(candidates, score, clicks_spec, batch_no, seed, now)
    v = validate_events(events, known_doc_ids)
    scored = v.valid.merge(candidates[list(schema.PAIR_KEY)].assign(score=score), on=list(schema.PAIR_KEY), how="left")
    return Served(v.valid, v.quarantined, query_frame(scored), v.counts)


def with_document_text(pairs, documents):
    """`pairs` with `doc_title` and `doc_text` from the catalogue ("" for a document it lacks)."""
    docs = documents.set_index("doc_id")
    return pairs.assign(doc_title=pairs["doc_id"].map(docs["title"]).fillna(""),
                        doc_text=pairs["doc_id"].map(docs["text"]).fillna(""))


def serve_logged(model, events, documents, quarantine, counts: dict) -> Served:
    """A logged batch as production would rank it: the production model scores every impressed
    pair once (the drift frame's `score`); the events are the log's own."""
    pairs = with_document_text(events.drop_duplicates(list(schema.PAIR_KEY))[[*schema.PAIR_KEY, "query"]], documents)
    score = model.expected_grade(model.score_frame(pairs)) if len(pairs) else []
    scored = events.merge(pairs[list(schema.PAIR_KEY)].assign(score=score), on=list(schema.PAIR_KEY), how="left")
    return Served(events, quarantine, query_frame(scored), counts)


# --------------------------------------------------------------------------- mine
def stream_pairs(events, pair_features, documents):
    """Unique (query, document) pairs of a batch with their text and pair features
    (`pair_features`: impressions, clicks, mean_position, mean_dwell_s in the pairs' order)."""
    pairs = events.groupby(list(schema.PAIR_KEY), sort=False).agg(
        query=("query", "first"), locale=("locale", "first")).reset_index()
    feats = pair_features(pairs[list(schema.PAIR_KEY)]) if callable(pair_features) else pair_features
    for col in ("impressions", "clicks", "mean_position", "mean_dwell_s"):
        pairs[col] = feats[col].to_numpy()
    docs = documents.set_index("doc_id")
    pairs["doc_title"] = pairs["doc_id"].map(docs["title"])
    pairs["doc_text"] = pairs["doc_id"].map(docs["text"])
    return pairs


def mine(ctx, spec, round_no: int, labelled: set):
    """Candidates and the mining report: every agent of `spec` (policy.mining) over the batch in
    `ctx` (a `MiningContext`: pairs, events, reference queries, model versions, and the
    production scores when they were computed elsewhere), one production pass per pair."""
    import time

    from serm.mining.combine import mine as combine

    t0 = time.perf_counter()
    cands, report = combine(ctx, spec, round_no, labelled)
    cands = cands.merge(ctx.pairs, on=["query_id", "doc_id", "locale"], how="left")
    report.update(seconds=round(time.perf_counter() - t0, 1))
    return cands, report


# --------------------------------------------------------------------------- annotate
def annotate(ctx, spec, round_no: int, policy_hash: str, human=None, log=print, cache=None, audits=None,
             reviews=None, truth=None, tuning_memo=None):
    """(votes, labels, open escalations, report) for the candidates in `ctx` (an
    `AnnotationContext`) under `spec` (policy.annotation). `reviews`: imported reviewer grades
    not yet trained on; they train now, mined again or not. `truth`: the hidden grade, only in
    simulation, for the report's diagnostics (never for a label). With `agreement.tune` the
    thresholds are chosen from the measured trade-off (`serm.annotation.tuning`; `tuning_memo`:
    see `serm.annotation.annotate.annotate`) and `report["agreement_used"]` holds them."""
    import pandas as pd

    from serm.annotation.annotate import REVIEWED, agent_accuracy, annotate as vote_and_agree, human_labels

    votes, labels, open_esc, report = vote_and_agree(ctx, spec, round_no, policy_hash, human, log, cache, audits,
                                                     tuning_memo)
    intra = report.get("agreement_used", {}).get("intra_min_share", spec.agreement.intra_min_share)
    waiting = without_pairs(reviews, pair_keys(labels)) if reviews is not None and len(reviews) else None
    if waiting is not None and len(waiting):
        labels = pd.concat([labels, human_labels(waiting, round_no, policy_hash)], ignore_index=True)
    report["human_resolved"] = int((labels.status == LabelStatus.HUMAN).sum())
    report["reviewer_resolutions_trained"] = int((labels.why == REVIEWED).sum())
    if truth is not None:
        acc = labels[labels.status == LabelStatus.ACCEPTED]
        if len(acc):
            hidden = [truth(q, d) for q, d in zip(acc.query_id, acc.doc_id)]
            report["simulation_accepted_label_accuracy"] = round(
                float((acc["grade"].astype(int).to_numpy() == hidden).mean()), 4)
        report["simulation_agent_accuracy"] = agent_accuracy(votes, intra, truth)
    return votes, labels, open_esc, report


def test_requests(events, documents, budget: int, exclude: set, seed):
    """Pairs to ask reviewers for as test labels: whole queries of the batch (every document
    it was shown), drawn at random among the queries in no label or test set (`exclude`),
    while their pairs fit in `budget`. Columns: the queue's (query_id, doc_id,
    locale, query, doc_title, doc_text, why, agents)."""
    import numpy as np
    import pandas as pd

    pairs = events.drop_duplicates(list(schema.PAIR_KEY))
    pairs = pairs[~pairs.query_id.isin(exclude)]
    sizes = pairs.groupby("query_id", sort=True).size()
    rng = np.random.default_rng(seed)
    picked, used = [], 0
    for q in sizes.index[rng.permutation(len(sizes))] if budget > 0 else []:
        if used + sizes[q] <= budget:
            picked.append(q)
            used += int(sizes[q])
    out = with_document_text(pairs[pairs.query_id.isin(picked)][[*schema.PAIR_KEY, "locale", "query"]]
                             .reset_index(drop=True), documents)
    out["why"] = "test request: grade every result of this query (kept for the evolving test set, never trained on)"
    out["agents"] = ""
    return out if len(out) else pd.DataFrame(columns=out.columns)


def cost_ledger(round_no: int, report: dict) -> dict:
    return {"round": round_no, "cost": report["cost"], "tokens": report["tokens"], "agents": report["ledger"]}


# --------------------------------------------------------------------------- check
# What the label suite validates: the label contract less the readable voter/reason columns.
CHECKED_COLUMNS = [c for c in schema.LABEL_COLUMNS if c not in ("agents", "why")]


def check(labels, known_query_ids: set, known_doc_ids: set, spec, abstention=None, history_grades=None,
          out_path=None):
    """Great Expectations checks of the round's trainable labels (policy.checks); the report,
    which `raise_for_failure` turns into `CheckFailed`."""
    from serm.checks import check_labels

    rows = schema.trainable(labels)
    escalated = int((labels.status == LabelStatus.ESCALATED).sum())
    return check_labels(rows[CHECKED_COLUMNS], known_query_ids, known_doc_ids, spec, escalated=escalated,
                        out_path=out_path, abstention=abstention, history_grades=history_grades)


# --------------------------------------------------------------------------- train
def replay(new, earlier, n_replay: int, rng_seed):
    """New examples plus `n_replay` earlier ones drawn without replacement (column `source`:
    new | replay). The one replay sampler of the round and of the benchmark."""
    import numpy as np
    import pandas as pd

    n = min(len(earlier), max(0, int(n_replay)))
    rng = np.random.default_rng(rng_seed)
    picked = earlier.iloc[rng.choice(len(earlier), n, replace=False)] if n else earlier.iloc[0:0]
    ex = pd.concat([new.assign(source="new"), picked.assign(source="replay")], ignore_index=True)
    ex["grade"] = ex["grade"].astype("int64")
    return ex


def skip_negatives(events, spec, exclude: set):
    """Grade-0 examples from skipped impressions (policy.training.unclicked_negatives): a
    document shown above a clicked one of the same query and never clicked in at least
    `min_impressions` impressions; at most `max_per_query` per query (the most shown first)."""
    import pandas as pd

    ev = events.assign(clicked=events["clicked"].astype(bool))
    last_click = ev[ev.clicked].groupby("query_id")["position"].max()
    g = ev.groupby(list(schema.PAIR_KEY), sort=False).agg(
        impressions=("clicked", "size"), clicks=("clicked", "sum"), position=("position", "min")).reset_index()
    g["last_click"] = g["query_id"].map(last_click)
    skipped = g[(g.clicks == 0) & (g.impressions >= spec.min_impressions) & (g.position < g.last_click)]
    skipped = skipped[[k not in exclude for k in zip(skipped.query_id, skipped.doc_id)]]
    skipped = skipped.sort_values(["query_id", "impressions", "position"], ascending=[True, False, True], kind="stable")
    out = skipped.groupby("query_id", sort=False).head(spec.max_per_query)[list(schema.PAIR_KEY)]
    return pd.DataFrame({"query_id": out["query_id"].to_numpy(), "doc_id": out["doc_id"].to_numpy(),
                         "grade": pd.array([0] * len(out), dtype="int64")})


def replay_count(replay_ratio: float, new: int) -> int:
    return int(round(replay_ratio * max(1, new)))


def train(model, examples, spec, seed: int, epochs=None, log=print):
    """Fine-tune `model` in place on `examples` (query, doc_title, doc_text, grade) under
    `spec` (policy.training); returns the TrainResult."""
    from serm.model.training import train as fit

    return fit(model, examples, spec, seed, epochs=epochs, log=log)


# --------------------------------------------------------------------------- evaluate + decide
def evaluate(model, tests: dict, ks, primary_metric: str = "ndcg@4", locales: dict | None = None,
             probas: dict | None = None) -> Metrics:
    """Metrics of `model` on each named test set (`{"static": judgments, "evolving": …}`),
    flat per set; `locales` names each set's locale in the result. An empty set has
    `queries: 0` and no metric values. `probas[name]`, where given, is the model's P(grade)
    per row of that set, already scored (e.g. from a score cache; `model` may then be None)."""
    from serm.evaluation import evaluate as score

    out = {}
    for name, judgments in tests.items():
        result = (score(model, judgments, tuple(ks), proba=(probas or {}).get(name))["overall"]
                  if len(judgments) else {"pairs": 0, "queries": 0})
        out[name] = {**result, **({"locale": locales[name]} if locales and name in locales else {})}
    return Metrics(out, primary_metric)


def per_query(judgments, proba, metric: str) -> dict:
    """{query_id: `metric` of one query} for a scored test set (`proba`: P(grade) per row):
    NDCG@k over queries with ≥ 2 candidates and a relevant one (as the set's NDCG counts
    them), or grade accuracy over each query's pairs."""
    import numpy as np

    from serm.model.cross_encoder import RelevanceModel
    from serm.stats import per_query_ndcg

    proba = np.asarray(proba)
    if metric.startswith("ndcg@"):
        return per_query_ndcg(judgments.assign(score=RelevanceModel.expected_grade(proba)), int(metric[5:]))
    if metric == "accuracy":
        hit = judgments.assign(hit=(proba.argmax(axis=1) == judgments["grade"].to_numpy()).astype(float))
        return hit.groupby("query_id")["hit"].mean().to_dict()
    raise ValueError(f"no per-query form of {metric!r}")


def paired(candidate: dict, production: dict, alpha: float = 0.05) -> dict:
    """{set: candidate − production, paired over the queries both score (`serm.stats.compare_queries`)},
    from `per_query` values of each model per test set."""
    from serm.stats import compare_queries

    out = {}
    for name, a in candidate.items():
        b = production.get(name) or {}
        if set(a) & set(b):
            out[name] = compare_queries(a, b, alpha=alpha).to_dict()
    return out


def calibration_pairs(seed, graded=None, documents=None):
    """Pairs with trusted grades, for agents with `calibration: learned`: the seed set plus
    `graded` (human-graded pairs with their query text: query_id, query, doc_id, grade), whose
    documents and locale come from `documents` (doc_id, title, text, locale); a later grade of
    a pair wins. Columns: query_id, query, doc_id, doc_title, doc_text, locale, grade."""
    import pandas as pd

    cols = ["query_id", "query", "doc_id", "doc_title", "doc_text", "locale", "grade"]
    parts = [seed[cols]] if seed is not None and len(seed) else []
    if graded is not None and len(graded) and documents is not None and len(documents):
        g = graded[graded["grade"].notna()][["query_id", "query", "doc_id", "grade"]]
        d = documents.rename(columns={"title": "doc_title", "text": "doc_text"})[
            ["doc_id", "doc_title", "doc_text", "locale"]].drop_duplicates("doc_id")
        parts.append(g.merge(d, on="doc_id")[cols])
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True).drop_duplicates(["query_id", "doc_id"], keep="last")
    out["grade"] = out["grade"].astype(int)
    return out.reset_index(drop=True)


def baselines(tests: dict, documents, ks, primary_metric: str = "ndcg@4", locales: dict | None = None) -> dict:
    """`{name: Metrics}` of the reference rankers (`serm.baselines`: BM25, the bi-encoder) on the
    same test sets: ranking metrics only (they give no grades)."""
    from serm.baselines import baseline_metrics

    return {name: Metrics(sets, primary_metric)
            for name, sets in baseline_metrics(tests, documents, ks, locales).items()}


def round_tests(tests, static_group: str, evolving_group: str) -> tuple[dict, dict]:
    """A round's test sets from a simulated world's fixed test judgments: static = the seed
    group, evolving = the newest batch's group (a locale, or a shift column's value). Returns
    (sets, their groups)."""
    groups = {schema.STATIC: static_group, schema.EVOLVING: evolving_group}
    key = tests["group"] if "group" in tests.columns else tests["locale"]   # older workspaces: by locale
    return {name: tests[key == g] for name, g in groups.items()}, groups


@dataclass(frozen=True)
class Decision:
    """Whether the candidate replaces production, and why (the reason names metric and set)."""

    promote: bool
    reason: str

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason}


def decide(metrics: RoundMetrics, spec) -> Decision:
    """Promote when every test set has at least `min_test_queries` queries, the candidate gains
    at least `min_gain` of the primary metric on the evolving test, loses at most
    `max_static_regression` on the static test, and its grades hold: accuracy and macro-F1 fall
    by at most `max_accuracy_regression` / `max_macro_f1_regression` on every test set, and
    (`significance`) is not significantly worse than production on any set, paired over its
    queries (`better`: and significantly better on the evolving test)."""
    m = spec.metric
    cand, prod = metrics.candidate, metrics.production
    for name in schema.TEST_SETS:
        queries = cand.get(name, "queries") or 0
        if queries < spec.min_test_queries or cand.get(name, m) is None:
            where = f" ({cand.locale(name)})" if cand.locale(name) else ""
            return Decision(False, f"the {name} test{where} has {queries} queries with a relevant document "
                                   f"< min_test_queries {spec.min_test_queries}: not promoting on noise")
    gain = cand.get(schema.EVOLVING, m) - prod.get(schema.EVOLVING, m)
    static_drop = prod.get(schema.STATIC, m) - cand.get(schema.STATIC, m)
    if gain < spec.min_gain:
        return Decision(False, f"evolving {m} gain {gain:+.4f} < min_gain {spec.min_gain}")
    if static_drop > spec.max_static_regression:
        return Decision(False, f"static {m} fell {static_drop:.4f} > max_static_regression {spec.max_static_regression}")
    for metric, limit, field in (("accuracy", spec.max_accuracy_regression, "max_accuracy_regression"),
                                 ("macro_f1", spec.max_macro_f1_regression, "max_macro_f1_regression")):
        for name in schema.TEST_SETS:
            before, after = prod.get(name, metric), cand.get(name, metric)
            if limit is None or before is None or after is None or before - after <= limit:
                continue
            where = f" ({cand.locale(name)})" if cand.locale(name) else ""
            return Decision(False, f"{name}{where} {metric} fell {before - after:.4f} ({before} -> {after}) "
                                   f"> {field} {limit}: the candidate's grades regress")
    keep, test = (False, "") if spec.significance == "off" else _significance(metrics, spec)
    if keep:
        return Decision(False, test)
    return Decision(True, f"evolving {m} {gain:+.4f} (>= {spec.min_gain}), static change {-static_drop:+.4f}{test}")


def _significance(metrics: RoundMetrics, spec) -> tuple[bool, str]:
    """The paired test for `decide`: (True, why production stays) or (False, what a promotion's
    reason adds)."""
    from serm.stats import verdict

    cand = metrics.candidate
    if not metrics.paired:   # metrics written before the test existed: nothing to hold against the candidate
        return False, ", no paired test in the metrics"
    for name in schema.TEST_SETS:
        c = metrics.paired.get(name)
        if c is None:
            continue
        where = f" ({cand.locale(name)})" if cand.locale(name) else ""
        said = verdict(c["p_value"], c["delta"], spec.alpha)
        detail = (f"{c['delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], p={c['p_value']:.4f} over "
                  f"{c['queries']} queries")
        if said == "worse":
            return True, (f"{name}{where} {spec.metric} is significantly worse than production's: {detail} < alpha "
                          f"{spec.alpha} (promotion.significance: {spec.significance})")
        if name == schema.EVOLVING and spec.significance == "better" and said != "better":
            return True, (f"the evolving{where} {spec.metric} gain is not significant: {detail}, alpha {spec.alpha} "
                          f"(promotion.significance: better)")
    c = metrics.paired.get(schema.EVOLVING)
    return False, f", evolving paired p={c['p_value']:.4f}" if c else ""
