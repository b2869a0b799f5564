"""capgap.eval.stats: intervals over few seeds, IQM, the slope against log10(params), verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from capgap.eval import stats
from capgap.eval.metrics import mean_ci

X = [3.0, 3.6, 4.2, 4.8, 5.4, 6.1]


def width(ci: tuple[float, float, float]) -> float:
    return ci[2] - ci[1]


# ---------------------------------------------------------------- degenerate seeds


def test_interval_degenerate_seeds() -> None:
    assert all(math.isnan(v) for v in stats.interval([]))
    assert all(math.isnan(v) for v in stats.interval([math.nan, math.nan]))
    m, lo, hi = stats.interval([0.3])  # one seed: a mean, no interval
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    m, lo, hi = stats.interval([0.3, math.nan])  # NaN dropped: still one seed
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    m, lo, hi = stats.interval([0.1, 0.1, 0.1, math.nan])  # seeds agree exactly: the only zero width
    assert m == pytest.approx(0.1) and lo == hi == m
    assert mean_ci([0.1, 0.1, 0.1]) == stats.interval([0.1, 0.1, 0.1])


def test_interval_disagreeing_seeds_have_width_growing_with_spread() -> None:
    base = np.array([-1.0, 0.0, 1.0])
    widths = []
    for spread in (1e-9, 1e-3, 0.01, 0.1):
        m, lo, hi = stats.interval(0.5 + spread * base)
        assert lo < m < hi and m == pytest.approx(0.5)
        widths.append(hi - lo)
    assert widths == sorted(widths) and widths[0] > 0
    # by hand: t(0.975, 2) * s / sqrt(3) with s = 0.1
    assert widths[-1] / 2 == pytest.approx(st.t.ppf(0.975, 2) * 0.1 / math.sqrt(3))
    # the case of the issue: three seeds at 0.3 +- 0.01 are no longer "0.3 [0.3, 0.3]"
    _, lo, hi = stats.interval([0.29, 0.30, 0.31])
    assert round(lo, 2) < 0.3 < round(hi, 2)


def test_interval_is_cut_at_the_support_only_where_it_reaches_past_it() -> None:
    """Steps to learn of 3 spread-out seeds: the t-interval reaches below 0 ("339k [-26k, 703k]" in a
    KeysChests table); cut at the support it starts at 0, with the same mean and upper end, and an
    interval inside the support is left as it is."""
    steps = [101_600.0, 406_400.0, 508_000.0]
    m, lo, hi = stats.interval(steps)
    assert lo < 0
    assert stats.interval(steps, support=(0.0, math.inf)) == (m, 0.0, hi)
    inside = [400_000.0, 410_000.0, 420_000.0]
    assert stats.interval(inside, support=(0.0, math.inf)) == stats.interval(inside)
    rates = [0.8, 0.95, 1.0]  # a rate's interval cut at 1 from above
    m, lo, hi = stats.interval(rates, support=(0.0, 1.0))
    assert hi == 1.0 and lo == stats.interval(rates)[1] and stats.interval(rates)[2] > 1


@pytest.mark.parametrize("metric, values, bound", [
    ("proxy_test", [0.65, 0.95, 1.0], ("hi", 1.0)),        # a rate: [0, 1]
    ("A_test", [0.0, 0.02, 0.3], ("lo", 0.0)),
    ("gap_test", [-0.9, -0.99, -0.4], ("lo", -1.0)),      # a gap C - A: [-1, 1]
    ("retention", [0.01, 0.02, 0.6], ("lo", 0.0)),        # a ratio: [0, inf)
])
def test_a_named_metric_is_cut_at_its_support(metric: str, values: list[float], bound: tuple[str, float]) -> None:
    """A report's rate never reads "0.84 [0.65, 1.02]": ``mean_ci(..., metric=)`` cuts the t-interval
    where the metric cannot go, and leaves the rest of it as it was."""
    raw = stats.interval(values)
    got = mean_ci(values, metric=metric)
    side, edge = bound
    assert (raw[1] < edge) if side == "lo" else (raw[2] > edge)  # the raw interval does reach past it
    assert got == ((raw[0], edge, raw[2]) if side == "lo" else (raw[0], raw[1], edge))


def test_calibrated_scores_are_not_cut() -> None:
    """Â is negative where an agent does worse than chance: no support, the t-interval as it is."""
    values = [-0.3, 0.1, 0.9]
    assert mean_ci(values, metric="A_hat_test") == stats.interval(values)


def test_mean_ci_delegates_to_interval() -> None:
    v = [0.2, 0.35, 0.3, math.nan]
    assert mean_ci(v) == stats.interval(v)
    assert mean_ci(v, n_resamples=10, seed=3) == stats.interval(v)  # the bootstrap arguments are unused now


# ---------------------------------------------------------------- coverage at n = 3


def test_coverage_at_three_seeds_t_holds_and_percentile_bootstrap_falls_short() -> None:
    """Why capgap uses the t-interval: on data shaped like ours (per-seed means of 512 episodes,
    seed rates ~ Beta(mean 0.5, sd 0.05)), 3 seeds, the t-interval covers ~95% while the percentile
    bootstrap (the former ``mean_ci``, and rliable's default on one task) covers ~78%.
    experiments/interval_coverage.py has the full table."""
    rng = np.random.default_rng(0)
    reps, n, truth = 2000, 3, 0.5
    k = truth * (1 - truth) / 0.05**2 - 1
    x = rng.binomial(512, rng.beta(truth * k, (1 - truth) * k, size=(reps, n))) / 512
    _, lo, hi = stats.t_bounds(x)
    t_cover = np.mean((lo <= truth) & (truth <= hi))
    _, lo, hi = stats.percentile_bootstrap(x, n_resamples=400, seed=1)
    p_cover = np.mean((lo <= truth) & (truth <= hi))
    assert 0.925 <= t_cover <= 0.975, t_cover  # Monte-Carlo sd 0.005
    assert p_cover <= 0.85, p_cover
    # and the per-call API agrees with the vectorised bounds
    assert stats.interval(x[0])[1] == pytest.approx(stats.t_bounds(x[:1])[1][0])


# ---------------------------------------------------------------- IQM


def test_iqm_known_data() -> None:
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # middle half: 3, 4, 5, 6
    assert stats.iqm([[1, 2], [3, 4]]) == pytest.approx(2.5)  # flattened over tasks and runs
    assert stats.iqm([0.2, math.nan, 0.4]) == pytest.approx(st.trim_mean([0.2, 0.4], 0.25))
    assert math.isnan(stats.iqm([]))


def test_iqm_ci_stratified_bootstrap() -> None:
    scores = {"a": [0.1, 0.2, 0.15], "b": [0.8, 0.9, 0.85], "c": [0.5, 0.55, 0.6]}
    m, lo, hi = stats.iqm_ci(scores, n_resamples=500, seed=0)
    assert m == pytest.approx(stats.iqm(np.concatenate(list(scores.values()))))
    assert lo < m < hi
    assert stats.iqm_ci(scores, n_resamples=500, seed=0) == (m, lo, hi)  # deterministic given the seed
    assert stats.iqm_ci(list(scores.values()), n_resamples=500, seed=0) == (m, lo, hi)
    # stratified: every resample keeps each task's runs in that task, so a suite of identical runs
    # per task has zero width even though the tasks differ wildly
    m, lo, hi = stats.iqm_ci({"a": [0.1, 0.1], "b": [0.9, 0.9], "c": [0.5, 0.5]}, n_resamples=200)
    assert lo == hi == m == pytest.approx(0.5)
    # expanded vs rliable-exact: the same centre, a wider interval
    e = stats.iqm_ci(scores, n_resamples=2000, seed=0)
    r = stats.iqm_ci(scores, n_resamples=2000, seed=0, expand=False)
    assert e[0] == r[0] and width(e) > width(r)
    # one run per task: nothing to resample
    m, lo, hi = stats.iqm_ci({"a": [0.1], "b": [0.9]})
    assert m == pytest.approx(0.5) and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in stats.iqm_ci({}))


# ---------------------------------------------------------------- slope


def seeds_about(means: list[float], spread: float) -> list[list[float]]:
    return [[m - spread, m, m + spread] for m in means]


def test_slope_recovers_a_planted_trend() -> None:
    rng = np.random.default_rng(1)
    for true in (0.1, -0.1):
        means = [0.5 + true * (x - 4.5) for x in X]
        values = [list(m + rng.normal(0, 0.02, 3)) for m in means]
        slope, lo, hi = stats.slope_ci(X, values)
        assert lo < true < hi and slope == pytest.approx(true, abs=0.03)
        assert (lo > 0) == (true > 0) and (hi < 0) == (true < 0)
        assert stats.verdict(slope, lo, hi) == ("grows" if true > 0 else "shrinks")
    # exactly linear rung means with exactly agreeing seeds: the slope, zero width
    assert stats.slope_ci([3, 4, 5], [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]) == pytest.approx((0.1, 0.1, 0.1))


def test_slope_ci_widens_when_seeds_disagree() -> None:
    means = [0.1, 0.15, 0.2, 0.3, 0.35, 0.4]
    for method in ("t", "bootstrap"):
        cis = [stats.slope_ci(X, seeds_about(means, s), method=method, seed=0) for s in (0.0, 0.01, 0.05, 0.15)]
        assert len({round(c[0], 12) for c in cis}) == 1  # the same rung means: the same slope
        widths = [width(c) for c in cis]
        assert widths[0] == 0 and widths == sorted(widths) and widths[1] > 0, (method, widths)
    # one disagreeing rung is enough for a non-zero width
    values = seeds_about(means, 0.0)
    values[-1] = [0.35, 0.4, 0.45]
    assert width(stats.slope_ci(X, values)) > 0


def test_difference_by_hand_degenerate_and_disagreeing() -> None:
    a, b = [0.5, 0.6, 0.7], [0.3, 0.3, 0.4, 0.2]
    d, lo, hi = stats.difference(a, b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    half = st.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert d == pytest.approx(0.3) and (lo, hi) == pytest.approx((0.3 - half, 0.3 + half))
    assert stats.difference([0.4] * 3, [0.1] * 5) == pytest.approx((0.3, 0.3, 0.3))  # seeds agree exactly
    widths = [width(stats.difference([0.4 - s, 0.4, 0.4 + s], [0.1, 0.1, 0.1])) for s in (0.0, 0.01, 0.1)]
    assert widths[0] == 0 < widths[1] < widths[2]  # the spread of either group widens it
    assert width(stats.difference([0.4, 0.4], [0.0, 0.2])) > 0
    d, lo, hi = stats.difference([0.4], [0.1, 0.2])
    assert d == pytest.approx(0.25) and math.isnan(lo) and math.isnan(hi)  # one seed: no interval
    assert all(math.isnan(v) for v in stats.difference([], [0.1, 0.2]))
    assert stats.difference([0.5, math.nan, 0.7], [0.1, 0.3])[0] == pytest.approx(0.4)  # NaNs dropped


def test_slope_ci_by_hand_and_edges() -> None:
    x = [3.0, 4.0, 5.0]
    values = [[0.1, 0.2], [0.3, 0.3, 0.3], [0.5, 0.6, 0.7]]
    w = np.array([-0.5, 0.0, 0.5])  # least-squares weights for x = 3, 4, 5
    slope = w @ [0.15, 0.3, 0.6]
    a = [0.25 * np.var([0.1, 0.2], ddof=1) / 2, 0.0, 0.25 * np.var([0.5, 0.6, 0.7], ddof=1) / 3]
    df = sum(a) ** 2 / (a[0] ** 2 / 1 + a[2] ** 2 / 2)
    half = st.t.ppf(0.975, df) * math.sqrt(sum(a))
    assert stats.slope_ci(x, values) == pytest.approx((slope, slope - half, slope + half))
    # a rung with one seed that carries weight: no interval; NaNs dropped; an empty rung dropped
    s, lo, hi = stats.slope_ci(x, [[0.1], [0.3, 0.3], [0.5, 0.6]])
    assert s == pytest.approx(0.5 * 0.55 - 0.5 * 0.1) and math.isnan(lo) and math.isnan(hi)
    assert stats.slope_ci(x, [[0.1, 0.2, math.nan], [], [0.5, 0.6]])[0] == pytest.approx((0.55 - 0.15) / 2)
    assert all(math.isnan(v) for v in stats.slope_ci([3.0], [[0.1, 0.2]]))
    assert all(math.isnan(v) for v in stats.slope_ci([3.0, 3.0], [[0.1, 0.2], [0.3, 0.4]]))
    with pytest.raises(ValueError):
        stats.slope_ci(x, values[:2])
    with pytest.raises(ValueError):
        stats.slope_ci(x, values, method="bca")
    # deterministic given the seed
    assert stats.slope_ci(x, values, method="bootstrap", seed=3) == stats.slope_ci(x, values, method="bootstrap",
                                                                                  seed=3)


# ---------------------------------------------------------------- verdict


@pytest.mark.parametrize(("lo", "hi", "want"), [
    (0.06, 0.2, "grows"),        # entirely above +band
    (-0.2, -0.06, "shrinks"),    # entirely below -band
    (-0.04, 0.04, "flat"),       # entirely inside the band
    (-0.05, 0.05, "flat"),       # band edges included in flat
    (0.05, 0.2, "inconclusive, CI > 0"),  # touches +band: not clearly above it
    (0.01, 0.2, "inconclusive, CI > 0"),  # above 0 but straddles +band: a trend smaller than the band is possible
    (-0.2, -0.01, "inconclusive, CI < 0"),
    (-0.2, 0.2, "inconclusive"),
    (math.nan, math.nan, "inconclusive"),  # no interval (one seed per rung)
])
def test_verdict_rules(lo: float, hi: float, want: str) -> None:
    assert stats.verdict((lo + hi) / 2 if not math.isnan(lo) else 0.1, lo, hi) == want


def test_verdict_band() -> None:
    assert stats.verdict(0.03, 0.02, 0.04, flat_band=0.01) == "grows"
    assert stats.verdict(0.03, 0.02, 0.04, flat_band=0.05) == "flat"
    assert set(stats.VERDICTS) == {"grows", "flat", "shrinks", "inconclusive"}


def test_verdict_table_over_a_suite() -> None:
    suite = {"Grows": (X, seeds_about([0.1 + 0.15 * (x - 3) for x in X], 0.01)),
             "Flat": (X, seeds_about([0.3] * 6, 0.01)),
             "Noisy": (X, seeds_about([0.1 + 0.15 * (x - 3) for x in X], 0.4)),
             "OneSeed": (X, [[0.1 * x] for x in X])}
    rows = stats.scaling_rows(suite)
    assert [r["verdict"] for r in rows] == ["grows", "flat", "inconclusive", "inconclusive"]
    assert rows[0]["seeds"] == "3,3,3,3,3,3" and rows[3]["seeds"] == "1,1,1,1,1,1"
    lines = stats.verdict_table(rows)
    assert lines[2].startswith("| Grows | 6 | 3,3,3,3,3,3 | 0.150 [") and lines[2].endswith("| grows |")
    assert "0.100 (no CI)" in lines[5] and "grows: CI above +0.05" in lines[-1]
