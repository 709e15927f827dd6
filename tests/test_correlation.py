"""Perplexity-vs-score correlations with bootstrap intervals, and the scatter plot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from minilm_jax.tasks.correlation import correlate, plot_correlation


def checkpoints(n=20, seed=0):
    rng = np.random.default_rng(seed)
    ppl = np.exp(rng.uniform(2.0, 4.0, n))
    score = 0.8 - 0.1 * np.log(ppl) + rng.normal(0, 0.03, n)
    return ppl, score


def test_point_estimates_match_scipy():
    x, y = checkpoints()
    res = correlate(x, y, n_resamples=500)
    assert res.pearson.value == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert res.spearman.value == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert res.n == 20 and res.pearson.value < -0.8


def test_bootstrap_is_seeded_and_agrees_with_scipy_bootstrap():
    x, y = checkpoints(30, seed=1)
    a = correlate(x, y, n_resamples=4000, seed=7)
    assert a == correlate(x, y, n_resamples=4000, seed=7)
    assert a != correlate(x, y, n_resamples=4000, seed=8)
    for c in (a.pearson, a.spearman):
        assert c.low <= c.value <= c.high and c.n_valid == 4000
    ref = stats.bootstrap((x, y), lambda u, v: stats.pearsonr(u, v)[0], paired=True,
                          vectorized=False, n_resamples=4000, method="percentile",
                          confidence_level=0.95, random_state=0).confidence_interval
    assert a.pearson.low == pytest.approx(ref.low, abs=0.03)
    assert a.pearson.high == pytest.approx(ref.high, abs=0.03)
    narrow = correlate(x, y, n_resamples=4000, seed=7, confidence=0.5)
    assert a.pearson.low < narrow.pearson.low < narrow.pearson.high < a.pearson.high


def test_degenerate_resamples_dropped_and_constant_rejected():
    x = np.array([1.0, 1.0, 1.0, 2.0])
    y = np.array([0.5, 0.4, 0.6, 0.9])
    res = correlate(x, y, n_resamples=2000, seed=0)
    # P(resample draws only x == 1) = (3/4)^4 ~ 0.32 -> those are undefined and dropped.
    assert 1200 < res.pearson.n_valid < 1500
    with pytest.raises(ValueError, match="constant"):
        correlate([1, 2, 3], [5, 5, 5])
    with pytest.raises(ValueError, match="at least 3"):
        correlate([1, 2], [3, 4])


def test_plot_writes_png(tmp_path):
    x, y = checkpoints()
    out = plot_correlation(x, y, tmp_path / "sub" / "ppl_vs_glue.png", log_x=True,
                           point_labels=[f"m{i}" for i in range(20)], title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image as mpimg
    img = mpimg.imread(out)
    assert img.shape[0] == 480 and img.shape[1] == 660  # 5.5 x 4 in at 120 dpi
