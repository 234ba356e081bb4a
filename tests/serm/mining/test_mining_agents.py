"""The click_model, disagreement and novelty miners, the prefilter and the one-pass rule, on
constructed cases where the right picks are known."""

import json

import numpy as np
import pandas as pd
import pytest

from serm.mining.base import MiningContext, ModelVersions
from serm.mining.click_model import ClickModel, fit_pbm
from serm.mining.combine import mine
from serm.mining.disagreement import Disagreement, committee_disagreement
from serm.mining.novelty import Novelty
from serm.policy import AgentSpec, MiningSpec

CONFIDENT_LOW = [0.97, 0.01, 0.01, 0.01]
CONFIDENT_HIGH = [0.01, 0.01, 0.01, 0.97]


class TableScorer:
    """A committee member with known opinions: P(grade) per doc_id; counts the rows it scores."""

    def __init__(self, table):
        self.table = table
        self.scored: list[str] = []

    def score_frame(self, frame):
        self.scored += frame["doc_id"].tolist()
        return np.array([self.table[d] for d in frame["doc_id"]], dtype=np.float32)


def pairs_frame(rows):
    """rows: (query_id, doc_id, locale, query, clicks, impressions, mean_position)."""
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "locale", "query", "clicks", "impressions", "mean_position"])
    return df.assign(mean_dwell_s=np.where(df.clicks > 0, 20.0, 0.0), doc_title="t", doc_text="x")


# --------------------------------------------------------------------------- click model
def simulate_pbm(alpha, theta, rank_of, sessions, rng):
    """Impressions of each document at the rank `rank_of(doc, rng)` gives, clicks from PBM."""
    cells = {}
    for _ in range(sessions):
        for d in range(len(alpha)):
            k = rank_of(d, rng)
            click = rng.random() < theta[k - 1] * alpha[d]
            n, c = cells.get((d, k), (0, 0))
            cells[(d, k)] = (n + 1, c + click)
    keys = sorted(cells)
    return (np.array([d for d, _ in keys]), np.array([k for _, k in keys]),
            np.array([cells[x][0] for x in keys]), np.array([cells[x][1] for x in keys]))


def spearman(a, b):
    return pd.Series(a).rank().corr(pd.Series(b).rank())


def test_pbm_em_recovers_attractiveness_and_position_bias():
    rng = np.random.default_rng(0)
    theta = 1.0 / np.arange(1, 6)                      # known position bias: P(examine rank k) = 1/k
    alpha = rng.uniform(0.05, 0.9, 30)
    pair, rank, n, c = simulate_pbm(alpha, theta, lambda d, r: int(r.integers(1, 6)), 400, rng)
    a_hat, t_hat, _ = fit_pbm(pair, rank, n, c, len(alpha), prior_strength=0.0, examination_exponent=0.0)
    assert spearman(a_hat, alpha) > 0.95
    assert np.abs(t_hat - theta).max() < 0.06, t_hat


def test_pbm_em_beats_raw_ctr_when_position_confounds_clicks():
    """A bad ranker shows the attractive documents low and the dull ones on top (80% of the
    time): raw CTR ranks the documents backwards, the click model does not."""
    rng = np.random.default_rng(1)
    theta = 1.0 / np.arange(1, 6) ** 1.5
    alpha = np.array([0.3, 0.4, 0.5, 0.6, 0.7])
    home = {d: d + 1 for d in range(5)}                # the least attractive document lives at rank 1
    pair, rank, n, c = simulate_pbm(alpha, theta, lambda d, r: home[d] if r.random() < 0.8 else int(r.integers(1, 6)),
                                    3000, rng)
    ctr = np.bincount(pair, c) / np.bincount(pair, n)
    a_hat, _, _ = fit_pbm(pair, rank, n, c, len(alpha), prior_strength=0.0)
    assert spearman(ctr, alpha) < -0.5, "raw CTR is fooled by position"
    assert spearman(a_hat, alpha) == pytest.approx(1.0)
    assert np.abs(a_hat - alpha).max() < 0.08


def test_click_model_picks_attractive_low_ranked_pair_the_model_scores_low():
    # The `hidden` document is mostly served at rank 4 (rarely examined) yet clicked whenever
    # examined; `top`, mostly at rank 1, collects the clicks examination alone explains. A
    # second ranking served on every 4th session puts the documents at other ranks, so position
    # and attractiveness can be told apart.
    rng = np.random.default_rng(2)
    theta = [1.0, 0.5, 0.33, 0.25]
    alpha = {"top": 0.4, "b": 0.1, "c": 0.1, "hidden": 0.95}
    rankings = [{"top": 1, "b": 2, "c": 3, "hidden": 4}] * 3 + [{"b": 1, "hidden": 2, "top": 3, "c": 4}]
    events = []
    for q in range(40):
        for s in range(64):
            for doc, k in rankings[s % 4].items():
                events.append((f"q{q}", f"q{q}-{doc}", k, bool(rng.random() < theta[k - 1] * alpha[doc])))
    ev = pd.DataFrame(events, columns=["query_id", "doc_id", "position", "clicked"])
    agg = ev.groupby(["query_id", "doc_id"], sort=False).agg(clicks=("clicked", "sum"), impressions=("clicked", "size"),
                                                           mean_position=("position", "mean")).reset_index()
    pairs = pairs_frame([(r.query_id, r.doc_id, "en", "q", int(r.clicks), int(r.impressions), r.mean_position)
                         for r in agg.itertuples()])
    proba = np.array([CONFIDENT_LOW] * len(pairs), dtype=np.float32)
    ctx = MiningContext(pairs=pairs, proba=proba, score=(proba * np.arange(4)).sum(1), events=ev)
    picks = ClickModel(min_attractiveness=0.55, max_score=1.5).select(ctx)
    picked = pairs.doc_id.to_numpy()[picks.index]
    assert all(d.endswith("-hidden") for d in picked), picked
    assert len(picked) >= 30
    top_ctr = (pairs.clicks / pairs.impressions)[pairs.doc_id.str.endswith("-top")].mean()
    hidden_ctr = (pairs.clicks / pairs.impressions)[pairs.doc_id.str.endswith("-hidden")].mean()
    assert top_ctr > hidden_ctr, "raw CTR would have preferred `top`"
    assert "PBM attractiveness" in picks.reasons[0] and "scored 0.06" in picks.reasons[0]
    assert picks.stats["theta"][0] == 1.0 and picks.stats["theta"][3] == pytest.approx(0.25, abs=0.1)


# --------------------------------------------------------------------------- disagreement
def test_committee_measures():
    agree = [np.array([CONFIDENT_HIGH]), np.array([CONFIDENT_HIGH])]
    split = [np.array([CONFIDENT_HIGH]), np.array([CONFIDENT_LOW])]
    for measure in ("kl_to_mean", "vote_entropy"):
        assert committee_disagreement(agree, measure)[0] == pytest.approx(0.0, abs=1e-6)
        assert committee_disagreement(split, measure)[0] > 0.5


def test_disagreement_picks_the_pair_two_versions_disagree_on():
    pairs = pairs_frame([("q1", "d1", "en", "q", 0, 2, 1.0), ("q1", "d2", "en", "q", 0, 2, 2.0),
                         ("q2", "d3", "en", "q", 0, 2, 1.0), ("q2", "d4", "en", "q", 0, 2, 2.0)])
    production = {"d1": CONFIDENT_HIGH, "d2": CONFIDENT_HIGH, "d3": CONFIDENT_LOW, "d4": CONFIDENT_LOW}
    previous = dict(production, d2=CONFIDENT_LOW)  # v1 thought d2 irrelevant; v2 is sure it is relevant
    v1 = TableScorer(previous)
    proba = np.array([production[d] for d in pairs.doc_id], dtype=np.float32)
    ctx = MiningContext(pairs=pairs, proba=proba, score=(proba * np.arange(4)).sum(1),
                        models=ModelVersions(production=2, loaders={2: lambda: TableScorer(production), 1: lambda: v1, 0: None}))
    picks = Disagreement(committee=["production", "previous"], top_share=0.25).select(ctx)
    assert pairs.doc_id[picks.index].tolist() == ["d2"]
    assert picks.stats == {"mode": "versions", "committee": ["v2", "v1"], "rescored_pairs": 4, "extra_forward_passes": 4}
    assert "committee of v2, v1 disagree" in picks.reasons[0]
    assert sorted(v1.scored) == ["d1", "d2", "d3", "d4"], "production's opinion comes from the shared pass"


def test_disagreement_falls_back_to_mc_dropout_and_caps_the_committee():
    from serm.model.cross_encoder import RelevanceModel
    from serm.policy import ModelSpec

    model = RelevanceModel.load("builtin:minilm-l6", ModelSpec(max_length=48, window_words=16), device="cpu")
    pairs = pairs_frame([(f"q{i}", f"d{i}", "en", f"who wrote book {i}", 0, 2, 1.0) for i in range(12)])
    pairs["doc_text"] = [f"Book {i} was written by author number {i} in the year {1900 + i}." for i in range(12)]
    proba = model.score_frame(pairs)
    ctx = MiningContext(pairs=pairs, proba=proba, score=model.expected_grade(proba),
                        models=ModelVersions(production=0, loaders={0: lambda: model}))
    picks = Disagreement(mc_dropout_passes=3, max_share=0.4, top_share=0.25).select(ctx)
    assert picks.stats["mode"] == "mc_dropout" and picks.stats["rescored_pairs"] == 5
    assert picks.stats["extra_forward_passes"] == 15
    assert len(picks.index) == 3 and (picks.priority > 0).all(), "dropout passes differ from the clean one"
    assert not model.model.training, "dropout is switched off again"
    np.testing.assert_allclose(model.score_frame(pairs), proba, atol=1e-5)
    assert picks.stats["sampled_layers"] == 1, "the default samples the last layer over a shared trunk"
    every = Disagreement(mc_dropout_passes=3, max_share=0.4, top_share=0.25, mc_dropout_layers=None).select(ctx)
    assert every.stats["sampled_layers"] == "all" and (every.priority > 0).all()


# --------------------------------------------------------------------------- novelty
PARAPHRASED = [
    "How many points did the Panthers defense surrender?", "How many career sacks did Jared Allen have?",
    "How many tackles did Luke Kuechly register?", "How many balls did Josh Norman intercept?",
    "Who registered the most sacks on the team this season?", "Who led the Panthers in sacks?",
    "How many forced fumbles did Thomas Davis have?", "How many Panthers defense players were selected for the Pro Bowl?",
]
PARAPHRASES = [  # hand-written rewordings of PARAPHRASED, in order
    "How many points were given up by the Panthers' defense?",
    "What is Jared Allen's total number of career sacks?",
    "How many tackles were recorded by Luke Kuechly?",
    "How many interceptions did Josh Norman make?",
    "Which player on the team had the most sacks this season?",
    "Which Panthers player had the most sacks?",
    "How many fumbles did Thomas Davis force?",
    "How many defensive players from the Panthers made the Pro Bowl?",
]


def test_novelty_flags_new_languages_not_english_paraphrases():
    from serm.data import xquad

    q = xquad.load_questions()
    en = q[q.locale == "en"]
    # Reference: 200 English questions across topics (as the seed set is), the paraphrased 8 among them.
    ref = pd.concat([en.head(12)[en.head(12)["query"].isin(PARAPHRASED)], en.iloc[12:].sample(192, random_state=0)])
    assert len(ref) == 200
    fresh = en[~en.question_id.isin(ref.question_id)].sample(100, random_state=1)  # new English questions
    foreign = q[q.locale.isin(["el", "ru"]) & q.question_id.isin(ref.question_id.iloc[8:28])]  # translations
    rows = [(f"p{i}", "d", "en", text, 0, 2, 1.0) for i, text in enumerate(PARAPHRASES)]
    rows += [(r.query_id, "d", "en", r.query, 0, 2, 1.0) for r in fresh.itertuples()]
    rows += [(r.query_id, doc, r.locale, r.query, 0, 2, float(k)) for r in foreign.itertuples() for k, doc in
             enumerate(["d1", "d2", "d3"], start=1)]
    ctx = MiningContext(pairs=pairs_frame(rows), reference_queries=ref["query"].tolist())
    picks = Novelty(k=10, quantile=0.9, docs_per_query=2).select(ctx)
    picked = ctx.pairs.iloc[picks.index]
    novel = set(picked.query_id)
    assert not novel & {f"p{i}" for i in range(len(PARAPHRASES))}, "no English paraphrase is novel"
    assert len(novel & set(foreign.query_id)) >= 36, "(nearly) every Greek and Russian query is novel"
    assert len(novel & set(fresh.query_id)) <= 15, "new English questions are novel about as often as 1 - quantile"
    assert set(picked[picked.locale != "en"].doc_id) == {"d1", "d2"}, "the best-placed docs_per_query documents"
    assert picks.stats["reference_queries"] == 200 and picks.stats["novel_queries"] == len(novel)
    assert "kNN distance" in picks.reasons[0]


# --------------------------------------------------------------------------- prefilter + one pass
def test_prefilter_scores_only_flagged_pairs_once_and_report_explains():
    rows = [(f"q{i}", f"d{i}-{j}", "de" if i % 2 else "en", f"query {i}", 1 if j == 0 else 0, 2, float(j + 1))
            for i in range(10) for j in range(5)]
    pairs = pairs_frame(rows)
    table = {d: ([0.4, 0.3, 0.2, 0.1] if d.endswith("-0") else CONFIDENT_LOW) for d in pairs.doc_id}
    prod = TableScorer(table)
    ctx = MiningContext(pairs=pairs, models=ModelVersions(production=0, loaders={0: lambda: prod}))
    spec = MiningSpec(budget=8, max_per_query=1,
                      agents=[AgentSpec(name="user_feedback", max_score=1.5), AgentSpec(name="uncertainty", top_share=0.5)],
                      prefilter={"agents": ["user_feedback"], "explore_share": 0.0})
    cands, report = mine(ctx, spec, round_no=1)
    assert sorted(prod.scored) == sorted(d for d in pairs.doc_id if d.endswith("-0")), "clicked pairs only, once each"
    assert report["forward_passes"] == {"production": 10, "committee": 0}
    assert report["prefilter"]["flagged"] == {"user_feedback": 10} and report["scored_pairs"] == 10
    assert np.isnan(ctx.score).sum() == 40
    assert len(cands) == 8 and (cands.agents.head(5) == "uncertainty,user_feedback").all()
    first = cands.iloc[0]
    assert set(json.loads(first.agent_scores)) == {"uncertainty", "user_feedback"}
    assert "uncertainty: entropy" in first.reasons and "user_feedback: clicked 1x" in first.reasons
    assert report["overlaps"] == {"user_feedback&uncertainty": 5}
    assert report["per_agent_locale"]["user_feedback"] == {"en": 5, "de": 5}
    assert set(report["per_locale"]) == {"en", "de"} and len(report["top_reasons"]) == 8
    json.dumps(report)  # the report is plain JSON


def test_weighted_vote_needs_enough_weight():
    rows = [(f"q{i}", "d", "en", "q", 1, 2, 1.0) for i in range(4)]
    pairs = pairs_frame(rows)
    proba = np.array([[0.3, 0.3, 0.2, 0.2]] * 2 + [CONFIDENT_LOW] * 2, dtype=np.float32)
    ctx = MiningContext(pairs=pairs, proba=proba)
    spec = MiningSpec(budget=10, agents=[AgentSpec(name="user_feedback"), AgentSpec(name="uncertainty", top_share=0.5)],
                      combine={"method": "vote", "min_votes": 1.5, "weights": {"user_feedback": 1.0, "uncertainty": 0.5}})
    cands, _ = mine(ctx, spec, round_no=1)
    assert sorted(cands.query_id) == ["q0", "q1"], "only pairs both agents picked reach 1.5"
