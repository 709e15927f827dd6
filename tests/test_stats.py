"""Report statistics: sample std, paired gaps, Fisher-z Pearson intervals, permutation p-values."""

import math

import numpy as np
import pytest
from scipy import stats

from minilm_jax.analysis.stats import mean_sd, paired_gap, pearson_fisher, permutation_p


def test_mean_sd_is_sample_std():
    m = mean_sd([1.0, 2.0, 4.0])
    assert m.sd == pytest.approx(np.std([1, 2, 4], ddof=1)) and m.n == 3
    assert mean_sd([5.0]).sd == 0.0 and "n = 3" in m.text()


def test_paired_gap_matches_scipy():
    a = {0: 60.0, 1: 58.0, 2: 63.0, 3: 61.0}
    b = {0: 50.0, 1: 51.0, 2: 55.0, 3: 49.0}
    gap = paired_gap(a, b)
    d = np.asarray([a[s] - b[s] for s in a])
    assert gap.mean == pytest.approx(d.mean()) and gap.method == "paired t"
    assert gap.p == pytest.approx(stats.ttest_rel(list(a.values()), list(b.values())).pvalue)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert (gap.low, gap.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert gap.verdict() == "pre-trained better"
    assert paired_gap({0: 1.0, 1: 2.0}, {0: 1.5, 1: 1.0}).verdict() == "no significant difference"


def test_gap_without_common_seeds_uses_welch_and_one_seed_is_undefined():
    gap = paired_gap({0: 1.0, 1: 2.0, 2: 3.0}, {5: 0.0, 6: 0.5, 7: 0.2})
    assert gap.method == "Welch t"
    assert gap.p == pytest.approx(stats.ttest_ind([1, 2, 3], [0, 0.5, 0.2], equal_var=False).pvalue)
    assert not paired_gap({0: 1.0}, {0: 0.0}).defined
    assert "undefined" in paired_gap({0: 1.0}, {0: 0.0}).verdict()


def test_fisher_interval_equals_scipy_and_hand_formula():
    x = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    y = [5.0, 4.1, 4.3, 2.0, 2.5, 1.0]
    res = pearson_fisher(x, y)
    r = stats.pearsonr(x, y)
    ci = r.confidence_interval(0.95)
    assert (res.low, res.high) == pytest.approx((ci.low, ci.high))
    z, half = math.atanh(r.statistic), stats.norm.ppf(0.975) / math.sqrt(len(x) - 3)
    assert (res.low, res.high) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), rel=1e-9)
    assert res.agreement(-1).startswith("agrees")


def test_permutation_p_exact_for_monotone_five_points():
    p, how = permutation_p(np.arange(5.0), np.arange(5.0) ** 2)
    # Only the identity and the reversal reach |r| of the observed order: 2 of 120 orderings.
    assert p == pytest.approx(2 / 120) and how.startswith("exact")


def test_monte_carlo_permutation_for_larger_n():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    p, how = permutation_p(x, rng.normal(size=30))
    assert how.startswith("Monte Carlo") and 0.0 < p <= 1.0


def test_constant_or_tiny_inputs_are_undefined_not_errors():
    assert "constant" in pearson_fisher([1, 2, 3, 4], [5, 5, 5, 5]).undefined
    assert "at least 4" in pearson_fisher([1, 2, 3], [3, 2, 1]).undefined
    assert pearson_fisher([1, 2, 3, 4], [5, 5, 5, 5]).text().startswith("undefined")


def test_t_interval_matches_scipy():
    from scipy import stats as st

    from minilm_jax.analysis.stats import t_interval

    values = [30.4, 32.6, 34.0]
    got = t_interval(values)
    low, high = st.t.interval(0.95, 2, loc=np.mean(values), scale=st.sem(values))
    assert got["n"] == 3 and abs(got["sd"] - np.std(values, ddof=1)) < 1e-12
    assert abs(got["low"] - low) < 1e-9 and abs(got["high"] - high) < 1e-9
    assert np.isnan(t_interval([1.0])["low"])


def test_corrected_resampled_t_widens_the_plain_interval_by_the_folds_overlap():
    """Nadeau & Bengio's correction by hand: 10 differences of 5-fold CV (n_test/n_train = 1/4);
    the plain paired t over the same differences is narrower by sqrt(1/J) / sqrt(1/J + 1/4)."""
    from minilm_jax.analysis.stats import corrected_resampled_gap

    d = np.array([2.0, 5.0, -1.0, 3.0, 4.0, 0.5, 6.0, 1.0, 2.5, 3.5])
    gap = corrected_resampled_gap(d, 0.25)
    se = d.std(ddof=1) * np.sqrt(1 / 10 + 0.25)
    assert gap.mean == pytest.approx(d.mean()) and gap.n == 10
    assert gap.high - gap.mean == pytest.approx(stats.t.ppf(0.975, 9) * se)
    assert gap.p == pytest.approx(2 * stats.t.sf(d.mean() / se, 9))
    plain = stats.ttest_1samp(d, 0.0)
    assert plain.pvalue < 0.01 < gap.p  # the plain test overstates this evidence
    assert "corrected resampled t" in gap.text()
    assert not corrected_resampled_gap([1.0], 0.25).defined


def _corrected_by_hand(d, test_over_train, confidence=0.95):
    """Nadeau & Bengio's corrected resampled t over J differences, written out with scipy:
    variance x (1/J + n_test/n_train), J - 1 degrees of freedom."""
    d = np.asarray(d, dtype=np.float64)
    j = d.size
    sd = math.sqrt(np.sum((d - d.mean()) ** 2) / (j - 1))
    se = sd * math.sqrt(1 / j + test_over_train)
    t = d.mean() / se
    q = stats.t.ppf(0.5 + confidence / 2, j - 1)
    return {"mean": d.mean(), "sd": sd, "low": d.mean() - q * se, "high": d.mean() + q * se,
            "t": t, "df": j - 1, "p": 2 * stats.t.sf(abs(t), j - 1)}


@pytest.mark.parametrize("folds, repeats, confidence", [(10, 2, 0.95), (5, 3, 0.95), (3, 4, 0.9)])
def test_corrected_resampled_gap_every_number_against_scipy(folds, repeats, confidence):
    """k-fold cross-validation repeated r times: J = k r differences, n_test / n_train =
    1 / (k - 1) (1/9 for 10 folds: never 1, so test/train swapped for train/test moves every
    number). Mean, sd, each bound on its own, t (mean / the interval's half width x its quantile),
    the J - 1 degrees of freedom (through the quantile and p) and p."""
    from minilm_jax.analysis.stats import corrected_resampled_gap

    rng = np.random.default_rng(folds * 10 + repeats)
    d = rng.normal(1.5, 2.0, folds * repeats)
    ratio = 1 / (folds - 1)
    gap = corrected_resampled_gap(d, ratio, confidence)
    want = _corrected_by_hand(d, ratio, confidence)
    assert gap.n == folds * repeats and gap.method == "corrected resampled t"
    assert gap.mean == pytest.approx(want["mean"], rel=1e-12)
    assert gap.sd == pytest.approx(want["sd"], rel=1e-12)
    assert gap.low == pytest.approx(want["low"], rel=1e-10, abs=1e-12)
    assert gap.high == pytest.approx(want["high"], rel=1e-10, abs=1e-12)
    assert gap.p == pytest.approx(want["p"], rel=1e-9)
    # t and df, recovered from the interval: half width = t_{df}(q) x se, t = mean / se
    half = (gap.high - gap.low) / 2
    se = half / stats.t.ppf(0.5 + confidence / 2, want["df"])
    assert gap.mean / se == pytest.approx(want["t"], rel=1e-9)
    assert gap.high - gap.mean == pytest.approx(gap.mean - gap.low, rel=1e-12)  # symmetric
    # the swapped ratio (train/test) gives other numbers: the checks above can tell them apart
    swapped = _corrected_by_hand(d, 1 / ratio, confidence)
    assert abs(swapped["low"] - want["low"]) > 10 * abs(want["low"]) * 1e-6 + 1e-3
    assert abs(swapped["p"] - want["p"]) > 1e-3


def test_pearson_within_groups_removes_each_groups_means():
    """Two groups whose levels differ (group b: higher x, lower y) and no relation inside each:
    the pooled r is strongly negative, the within-group r near 0. Checked against the residual
    correlation computed here with numpy and a partial correlation's t-test and Fisher-z interval
    (n - K - 1 degrees of freedom, standard error 1 / sqrt(n - K - 2)); one group = plain
    Pearson (scipy's pearsonr: r, interval, p)."""
    from minilm_jax.analysis.stats import pearson_within_groups

    x = np.array([10.0, 11.0, 12.0, 13.0, 30.0, 31.0, 32.0, 33.0])
    y = np.array([70.0, 72.0, 69.0, 71.0, 40.0, 42.0, 39.0, 41.0])
    groups = ["a"] * 4 + ["b"] * 4
    assert stats.pearsonr(x, y).statistic < -0.95
    got = pearson_within_groups(x, y, groups)
    xr = x - np.where(np.arange(8) < 4, x[:4].mean(), x[4:].mean())
    yr = y - np.where(np.arange(8) < 4, y[:4].mean(), y[4:].mean())
    r = np.sum(xr * yr) / np.sqrt(np.sum(xr ** 2) * np.sum(yr ** 2))
    assert abs(r) < 0.5 and got.r == pytest.approx(r, rel=1e-12)
    n, k = 8, 2
    assert (got.n, got.groups, got.df) == (n, k, n - k - 1)
    t = r * math.sqrt((n - k - 1) / (1 - r * r))
    assert got.p == pytest.approx(2 * stats.t.sf(abs(t), n - k - 1), rel=1e-9)
    half = stats.norm.ppf(0.975) / math.sqrt(n - k - 2)
    assert got.low == pytest.approx(math.tanh(math.atanh(r) - half), rel=1e-9)
    assert got.high == pytest.approx(math.tanh(math.atanh(r) + half), rel=1e-9)
    one = pearson_within_groups(x[:6], y[:6] + x[:6], ["g"] * 6)
    plain = stats.pearsonr(x[:6], y[:6] + x[:6])
    ci = plain.confidence_interval(0.95)
    assert one.r == pytest.approx(plain.statistic, rel=1e-12) and one.df == 4
    assert (one.low, one.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert one.p == pytest.approx(plain.pvalue, rel=1e-6)
    assert "at least K + 3 = 5" in pearson_within_groups(x[:4], y[:4], list("aabb")).undefined
    flat = pearson_within_groups(x, np.where(np.arange(8) < 4, 1.0, 2.0), groups)
    assert "constant within every group" in flat.undefined
