"""The paired significance tests on constructed cases with a known answer."""

import math

import numpy as np
import pandas as pd
import pytest

from serm.evaluation import ranking_metrics
from serm.stats import (compare, compare_rankings, holm, paired_bootstrap_ci, paired_randomization, per_query_ndcg,
                        with_holm)


def test_identical_systems_tie_with_p_one():
    a = np.random.default_rng(0).random(50)
    c = compare(a, a)
    assert c.p_value == 1.0 and c.delta == 0 and c.verdict == "tie"


def test_a_consistent_gain_is_significant_and_the_ci_excludes_zero():
    rng = np.random.default_rng(1)
    b = rng.random(300)
    a = b + 0.05 + rng.normal(0, 0.05, 300)          # +0.05 per query, noise 0.05: z ~ 17
    c = compare(a, b, resamples=4000)
    assert c.verdict == "better" and c.p_value < 0.001
    assert 0.04 < c.ci_low < 0.05 < c.ci_high < 0.06
    assert compare(b, a, resamples=4000).verdict == "worse"


def test_noise_without_a_shift_is_a_tie_at_the_nominal_rate():
    """Under the null (no shift), p < 0.05 in about 5% of experiments."""
    rng = np.random.default_rng(2)
    rejections = sum(paired_randomization(rng.normal(0, 1, 40), rng.normal(0, 1, 40), resamples=999, seed=s) < 0.05
                     for s in range(200))
    assert 2 <= rejections <= 22          # 5% of 200 = 10; binomial 99.9% band


def test_randomization_matches_the_exact_sign_flip_distribution_on_a_tiny_case():
    """d = (1, 1, 1): of the 8 sign assignments, 2 have |mean| >= 1: the exact p is 0.25."""
    p = paired_randomization([2, 2, 2], [1, 1, 1], resamples=20000)
    assert p == pytest.approx(0.25, abs=0.015)
    low, high = paired_bootstrap_ci([2, 2, 2], [1, 1, 1])
    assert low == high == 1.0


def test_holm_adjusts_a_family_by_hand_worked_example():
    """m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == [] and holm([0.2]) == [0.2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_holm_keeps_the_family_error_rate_under_the_null():
    """Twenty true-null comparisons per family: unadjusted, most families hold a false 'better or
    worse'; after Holm about alpha of them (Holm bounds it by 0.05)."""
    rng = np.random.default_rng(4)
    raw = holm_hit = 0
    for family in range(100):
        cs = [compare(rng.normal(0, 1, 30), rng.normal(0, 1, 30), resamples=499, seed=family).to_dict()
              for _ in range(20)]
        raw += any(c["verdict"] != "tie" for c in cs)
        holm_hit += any(c["verdict_holm"] != "tie" for c in with_holm(cs))
    assert raw >= 40                      # 1 - 0.95^20 = 64% of families
    assert holm_hit <= 12                 # <= 5% expected; binomial 99.9% band


def test_holm_leaves_a_strong_effect_significant():
    rng = np.random.default_rng(5)
    b = rng.random(300)
    cs = with_holm([compare(b + 0.05, b, resamples=999).to_dict(), compare(b, b, resamples=999).to_dict()])
    assert cs[0]["verdict_holm"] == "better" and cs[0]["p_holm"] < 0.01
    assert cs[1]["verdict_holm"] == "tie" and cs[1]["p_holm"] == 1.0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="one length"):
        compare([1, 2], [1, 2, 3])


def test_per_query_ndcg_averages_to_ranking_metrics_and_rankings_compare():
    rows = []
    for q in range(30):
        for d in range(4):
            rows.append((f"q{q}", f"d{d}", 3 if d == 0 else 0))
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade"])
    good = df.assign(score=np.where(df.grade > 0, 1.0, 0.0))
    rng = np.random.default_rng(3)
    shuffled = df.assign(score=rng.random(len(df)))
    per = per_query_ndcg(shuffled)
    assert len(per) == 30
    assert math.isclose(np.mean(list(per.values())), ranking_metrics(shuffled, (4,))["ndcg@4"], abs_tol=1e-4)
    c = compare_rankings(good, shuffled, resamples=2000)
    assert c.queries == 30 and c.verdict == "better" and c.mean_a == 1.0
    with pytest.raises(ValueError, match="different queries"):
        compare_rankings(good, shuffled[shuffled.query_id != "q0"])
