"""Compute-optimal frontier and power-law fits (one line, two segments with a break, bootstrap)."""

import math

import numpy as np
import pytest

from minilm_jax.analysis.fits import (PAPER_BREAK_FLOPS, PAPER_FITS, bic, bootstrap_break,
                                      compare_fits, fit_power_law, fit_two_segments)
from minilm_jax.analysis.frontier import bin_index, compute_frontier

FLOPS = np.logspace(13, 17, 45)  # ~11 points per decade, 1e13..1e17


def paper_curve(flops: np.ndarray) -> np.ndarray:
    """The paper's two published fits, jumping down by ~0.34 nats at 2.2e15."""
    below, above = PAPER_FITS
    return np.where(flops < PAPER_BREAK_FLOPS, below.predict(flops), above.predict(flops))


def noisy(loss: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return loss * np.exp(np.random.default_rng(seed).normal(0.0, sigma, loss.shape))


# --- frontier ----------------------------------------------------------------------------------

def test_bins_are_anchored_at_powers_of_ten():
    # 1 bin per decade: [1e14, 1e15) is bin 14; an exact edge opens the next bin.
    assert bin_index([1e14, 9.99e14, 1e15, 1.01e15], 1).tolist() == [14, 14, 15, 15]
    # 11 per decade: 10^(166/11) is the lower edge of bin 166.
    assert bin_index([10 ** (166 / 11)], 11).tolist() == [166]
    assert bin_index([10 ** (166 / 11) * 0.999], 11).tolist() == [165]


def test_frontier_keeps_the_lowest_loss_per_bin():
    # bins per decade = 1: bin 14 = [1e14, 1e15), bin 15 = [1e15, 1e16), bin 17 = [1e17, 1e18)
    flops = [2e14, 5e14, 9e14, 1e15, 3e15, 1.5e17, float("nan"), 0.0, 4e15]
    loss = [5.0, 4.0, 4.5, 3.9, 3.5, 2.0, 1.0, 0.5, 3.5]
    f = compute_frontier(flops, loss, bins_per_decade=1)
    # bin 14: min(5.0, 4.0, 4.5) -> index 1; bin 15: min(3.9, 3.5, 3.5) -> tie, smaller FLOPs
    # (index 4); bin 17 -> index 5. NaN FLOPs and C = 0 are ignored; bin 16 is empty.
    assert f.indices.tolist() == [1, 4, 5]
    assert f.bins.tolist() == [14, 15, 17]
    assert f.loss.tolist() == [4.0, 3.5, 2.0]
    np.testing.assert_allclose(f.edges, [[1e14, 1e15], [1e15, 1e16], [1e17, 1e18]])
    assert f.n_candidates == 7


def test_frontier_of_nothing_is_empty():
    f = compute_frontier([], [])
    assert len(f) == 0 and f.edges.shape == (0, 2)


# --- one power law -----------------------------------------------------------------------------

def test_exact_power_law_is_recovered_exactly():
    fit = fit_power_law(FLOPS, 382.0 * FLOPS ** -0.141)
    assert fit.a == pytest.approx(382.0, rel=1e-9)
    assert fit.b == pytest.approx(-0.141, abs=1e-12)
    assert fit.r2_log == pytest.approx(1.0) and fit.r2_linear == pytest.approx(1.0)
    assert fit.n == 45


def test_noisy_power_law_recovers_a_and_b():
    # 2% log-normal noise over 4 decades: SE(b) ~ 0.001, SE(ln a) ~ 0.035; tolerances ~4-5 SE.
    fit = fit_power_law(FLOPS, noisy(79.2 * FLOPS ** -0.093, 0.02, seed=1))
    assert fit.b == pytest.approx(-0.093, abs=0.005)
    assert fit.a == pytest.approx(79.2, rel=0.15)
    assert 0.9 < fit.r2_log <= 1.0 and 0.9 < fit.r2_linear <= 1.0


def test_fit_needs_two_distinct_flops_and_positive_values():
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([1e15, 1e15], [3.0, 2.9])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1e15, 2e15], [3.0, -1.0])


# --- two segments, BIC, bootstrap -----------------------------------------------------------------

def test_planted_break_is_found_with_its_laws():
    loss = noisy(paper_curve(FLOPS), 0.01, seed=2)
    two = fit_two_segments(loss=loss, flops=FLOPS)
    assert two.break_low < PAPER_BREAK_FLOPS < two.break_high
    assert two.left.b == pytest.approx(-0.093, abs=0.01)
    assert two.right.b == pytest.approx(-0.141, abs=0.01)
    assert two.n_left + two.right.n == 45


def test_bootstrap_interval_contains_the_planted_break_and_is_seeded():
    loss = noisy(paper_curve(FLOPS), 0.01, seed=2)
    interval = bootstrap_break(FLOPS, loss, n_resamples=200, seed=3)
    assert interval.low < PAPER_BREAK_FLOPS < interval.high
    assert interval.high / interval.low < 10  # located within about a decade
    assert interval.n_valid == 200
    assert bootstrap_break(FLOPS, loss, n_resamples=200, seed=3) == interval


def test_bic_prefers_two_segments_on_a_break_and_one_line_without():
    broken = compare_fits(FLOPS, noisy(paper_curve(FLOPS), 0.01, seed=2), n_resamples=0)
    assert broken.prefers_two and broken.bic_two < broken.bic_single - 10
    clean = compare_fits(FLOPS, noisy(79.2 * FLOPS ** -0.093, 0.01, seed=4), n_resamples=0)
    assert not clean.prefers_two and clean.bic_single < clean.bic_two
    assert clean.interval is None


def test_bic_formula():
    # n ln(SSE/n) + k ln n with n = 10, SSE = 0.1, k = 2.
    assert bic(0.1, 10, 2) == pytest.approx(10 * math.log(0.01) + 2 * math.log(10))


def test_break_search_respects_min_points():
    flops, loss = FLOPS[:5], paper_curve(FLOPS[:5])
    assert fit_two_segments(flops, loss, min_points=3) is None  # 5 < 2 * 3
    two = fit_two_segments(FLOPS[:6], paper_curve(FLOPS[:6]), min_points=3)
    assert two is not None and two.n_left == 3
    # Repeated FLOPs values count once towards min_points and are never split.
    flops = np.repeat(FLOPS[:5], 2)
    assert fit_two_segments(flops, paper_curve(flops), min_points=3) is None


def test_bootstrap_skips_resamples_without_a_valid_split():
    flops = FLOPS[:6]
    interval = bootstrap_break(flops, paper_curve(flops), min_points=3, n_resamples=50, seed=0)
    # A resample keeps all 6 distinct values with probability 6!/6^6 ~ 1.5%, so most are skipped.
    assert interval.n_valid < 50
