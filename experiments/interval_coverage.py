"""How often does a "95%" interval over seeds contain the truth? The tables behind docs/metrics.md
("Intervals: why this method") and the docstring of ``capgap.eval.stats``.

    OMP_NUM_THREADS=1 python experiments/interval_coverage.py              # all tables, ~3 min on one core
    OMP_NUM_THREADS=1 python experiments/interval_coverage.py --reps 500   # quicker, noisier
    OMP_NUM_THREADS=1 python experiments/interval_coverage.py --only point

Simulated data are shaped like capgap's: each seed draws its true rate p from a Beta distribution
(the seed-to-seed spread), then scores Binomial(512, p) / 512 (its mean over 512 evaluation
episodes). The truth is the mean over seeds of the population, E[p]. Tables:

- ``point``: coverage and mean width of the 95% interval of one mean at n = 3, 5, 10 seeds, for
  the Student-t interval (``stats.interval``, capgap's choice), the percentile bootstrap (capgap's
  former ``mean_ci``), BCa (``scipy.stats.bootstrap``), bootstrap-t, and rliable's stratified
  bootstrap on one task (n = 3 only, fewer experiments; needs ``pip install rliable`` and
  pandas < 3, else skipped);
- ``slope``: coverage and width of the slope of rung means against log10(params) over the six rungs,
  for the Welch t-interval (``stats.slope_ci``), the stratified bootstrap over seeds within rungs,
  and an ordinary regression on every (rung, seed) point;
- ``iqm``: coverage of ``stats.iqm_ci`` (IQM with rliable's stratified bootstrap) over a suite;
- ``threshold``: coverage of the mitigation threshold x* (``mitigation.threshold``'s bootstrap).

Coverage is the fraction of simulated experiments whose interval contains the truth; with R
experiments its Monte-Carlo standard error is about sqrt(0.95 * 0.05 / R) (0.5 points at R = 2000).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats as st

from capgap.eval import stats
from capgap.eval.mitigation import Point, threshold

EPISODES = 512
LOG10_PARAMS = np.array([3.0, 3.6, 4.2, 4.8, 5.4, 6.1])
"""About the ladder nano..large (params grow ~ m², m = 2..72)."""

Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def beta(mean: float, sd: float) -> Sampler:
    """Seed rates p ~ Beta with this mean and sd."""
    k = mean * (1 - mean) / sd**2 - 1
    return lambda rng, shape: rng.beta(mean * k, (1 - mean) * k, size=shape)


def bimodal(q: float, low: float = 0.1, high: float = 0.9, sd: float = 0.03) -> Sampler:
    """A fraction ``q`` of the seeds near ``low`` (misgeneralised), the rest near ``high``."""
    lo, hi = beta(low, sd), beta(high, sd)
    return lambda rng, shape: np.where(rng.random(shape) < q, lo(rng, shape), hi(rng, shape))


POINT_CASES: list[tuple[str, Sampler, float]] = [
    ("mid 0.5, sd 0.01", beta(0.5, 0.01), 0.5),
    ("mid 0.5, sd 0.05", beta(0.5, 0.05), 0.5),
    ("mid 0.5, sd 0.1", beta(0.5, 0.1), 0.5),
    ("high 0.9, sd 0.05", beta(0.9, 0.05), 0.9),
    ("skew 0.97, sd 0.03", beta(0.97, 0.03), 0.97),
    ("skew 0.03, sd 0.03", beta(0.03, 0.03), 0.03),
    ("skew 0.05, sd 0.1", beta(0.05, 0.1), 0.05),
    ("bimodal 1/4 at 0.1", bimodal(0.25), 0.25 * 0.1 + 0.75 * 0.9),
]


def scores(rng: np.random.Generator, sampler: Sampler, shape: tuple[int, ...]) -> np.ndarray:
    return rng.binomial(EPISODES, sampler(rng, shape)) / EPISODES


def bca(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = st.bootstrap((x,), np.mean, axis=-1, n_resamples=n_resamples, method="BCa", rng=rng)
    return res.confidence_interval.low, res.confidence_interval.high


def bootstrap_t(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[-1]
    m, se = x.mean(-1), x.std(-1, ddof=1) / math.sqrt(n)
    idx = rng.integers(0, n, size=(*x.shape[:-1], n_resamples, n))
    xb = np.take_along_axis(x[..., None, :], idx, axis=-1)
    mb, seb = xb.mean(-1), xb.std(-1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = (mb - m[..., None]) / seb
    tb = np.where(np.isnan(tb), 0.0, tb)  # 0/0: the resample is the sample's mean exactly
    # x/0 (a resample of one repeated seed): ±inf, kept; no interpolation, so an infinite quantile stays one
    q_lo, q_hi = np.quantile(tb, [0.025, 0.975], axis=-1, method="inverted_cdf")
    return m - q_hi * se, m - q_lo * se


def rliable_interval(x: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float] | None:
    """rliable's stratified bootstrap (percentile) of the mean of one task's runs, or None without rliable."""
    try:
        from rliable import library as rly
    except Exception:  # not installed, or its arch does not import under pandas 3
        return None
    _, ci = rly.get_interval_estimates({"x": x[:, None]}, lambda s: np.array([s.mean()]), reps=n_resamples,
                                       random_state=np.random.RandomState(seed))
    return float(ci["x"][0, 0]), float(ci["x"][1, 0])


def chunked(f: Callable, x: np.ndarray, size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    parts = [f(x[i:i + size]) for i in range(0, len(x), size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def cover(lo: np.ndarray, hi: np.ndarray, truth: float) -> float:
    return float(np.mean((lo <= truth) & (truth <= hi)))


def point_table(reps: int, n_resamples: int, rliable_reps: int) -> list[str]:
    lines = ["| case | n | Student-t | percentile bootstrap | BCa | bootstrap-t | rliable (1 task) "
             "| width t / percentile |", "|---|---|---|---|---|---|---|---|"]
    for ci_, (label, sampler, truth) in enumerate(POINT_CASES):
        for n in (3, 5, 10):
            rng = np.random.default_rng([ci_, n])
            x = scores(rng, sampler, (reps, n))
            _, t_lo, t_hi = stats.t_bounds(x)
            p_lo, p_hi = chunked(lambda c, rng=rng: stats.percentile_bootstrap(c, n_resamples, rng)[1:], x)
            b_lo, b_hi = chunked(lambda c, rng=rng: bca(c, n_resamples, rng), x)
            bt_lo, bt_hi = chunked(lambda c, rng=rng: bootstrap_t(c, n_resamples, rng), x)
            inf = np.mean(np.isinf(bt_lo) | np.isinf(bt_hi))
            bt = f"{cover(bt_lo, bt_hi, truth):.3f}" + (f" ({inf:.0%} infinite)" if inf else "")
            rl = "—"
            if n == 3 and rliable_reps:
                got = [rliable_interval(x[i], n_resamples, i) for i in range(rliable_reps)]
                if got[0] is not None:
                    lo, hi = np.array(got).T
                    rl = f"{cover(lo, hi, truth):.3f} (R={rliable_reps})"
                else:
                    rl = "not importable"
            w = f"{np.mean(t_hi - t_lo):.3f} / {np.mean(p_hi - p_lo):.3f}"
            lines.append(f"| {label} | {n} | {cover(t_lo, t_hi, truth):.3f} | {cover(p_lo, p_hi, truth):.3f} | "
                         f"{cover(b_lo, b_hi, truth):.3f} | {bt} | {rl} | {w} |")
    return lines


SLOPE_CASES: list[tuple[str, list[Sampler]]] = [
    ("linear 0.1→0.41, sd 0.05", [beta(0.1 + 0.1 * (x - 3), 0.05) for x in LOG10_PARAMS]),
    ("flat 0.3, sd 0.1", [beta(0.3, 0.1) for _ in LOG10_PARAMS]),
    ("step at base, sd 0.05", [beta(m, 0.05) for m in (0.05, 0.05, 0.05, 0.4, 0.45, 0.45)]),
    ("linear, sd 0.02→0.15", [beta(0.2 + 0.1 * (x - 3), s)
                              for x, s in zip(LOG10_PARAMS, np.linspace(0.02, 0.15, 6), strict=True)]),
    ("bimodal, P(MG) 0.1→0.6", [bimodal(1 - q, low=0.05, high=0.8) for q in np.linspace(0.1, 0.6, 6)]),
]


def true_mean(sampler: Sampler) -> float:
    return float(sampler(np.random.default_rng(12345), (400_000,)).mean())


def ols_t(ys: list[np.ndarray]) -> tuple[float, float]:
    """Ordinary regression on every (rung, seed) point, t-interval with N - 2 df."""
    x = np.concatenate([np.full(y.size, xr) for xr, y in zip(LOG10_PARAMS, ys, strict=True)])
    y = np.concatenate(ys)
    res = st.linregress(x, y)
    half = st.t.ppf(0.975, x.size - 2) * res.stderr
    return res.slope - half, res.slope + half


def slope_table(reps: int, n_resamples: int) -> list[str]:
    lines = ["| case | seeds per rung | Welch t (`slope_ci`) | stratified bootstrap | OLS on all points "
             "| width Welch / bootstrap |", "|---|---|---|---|---|---|"]
    w = stats._slope_weights(LOG10_PARAMS)
    for ci_, (label, samplers) in enumerate(SLOPE_CASES):
        truth = float(w @ np.array([true_mean(s) for s in samplers]))
        for n in (3, 5):
            rng = np.random.default_rng([100 + ci_, n])
            hits = np.zeros(3)
            widths = np.zeros(2)
            for _ in range(reps):
                ys = [scores(rng, s, (n,)) for s in samplers]
                out = [stats.slope_ci(LOG10_PARAMS, ys)[1:],
                       stats.slope_ci(LOG10_PARAMS, ys, method="bootstrap", n_resamples=n_resamples,
                                      seed=int(rng.integers(2**31)))[1:],
                       ols_t(ys)]
                hits += [lo <= truth <= hi for lo, hi in out]
                widths += [out[0][1] - out[0][0], out[1][1] - out[1][0]]
            c = hits / reps
            lines.append(f"| {label} | {n} | {c[0]:.3f} | {c[1]:.3f} | {c[2]:.3f} | "
                         f"{widths[0] / reps:.3f} / {widths[1] / reps:.3f} |")
    return lines


IQM_TASK_MEANS = (0.05, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97)


def iqm_table(reps: int, n_resamples: int) -> list[str]:
    lines = ["| tasks | seeds per task | `iqm_ci` (expanded) | width | rliable-exact (`expand=False`) | width |",
             "|---|---|---|---|---|---|"]
    for tasks in (5, 10):
        samplers = [beta(m, 0.05) for m in IQM_TASK_MEANS[::10 // tasks]]
        big = np.random.default_rng(7)
        truth = stats.iqm(np.concatenate([scores(big, s, (200_000,)) for s in samplers]))
        for n in (3, 5):
            rng = np.random.default_rng([200 + tasks, n])
            hit, width = np.zeros(2), np.zeros(2)
            for r in range(reps):
                runs = [scores(rng, s, (n,)) for s in samplers]
                for j, expand in enumerate((True, False)):
                    _, lo, hi = stats.iqm_ci(runs, n_resamples, seed=r, expand=expand)
                    hit[j] += lo <= truth <= hi
                    width[j] += hi - lo
            c, w = hit / reps, width / reps
            lines.append(f"| {tasks} | {n} | {c[0]:.3f} | {w[0]:.3f} | {c[1]:.3f} | {w[1]:.3f} |")
    return lines


THRESHOLD_XS = (0.0, 0.01, 0.03, 0.1, 0.3)
THRESHOLD_CASES = {"clear": (0.3, 0.6, 0.72, 0.88, 0.95), "close to the bar": (0.3, 0.6, 0.77, 0.83, 0.95)}
"""True mean retention per point; in both the truth is x* = 0.1 (the first mean ≥ 0.8)."""


def threshold_table(reps: int, n_resamples: int) -> list[str]:
    lines = ["| curve | seeds per point | seed sd | x* CI coverage | x* point estimate right |",
             "|---|---|---|---|---|"]
    for k, (label, means) in enumerate(THRESHOLD_CASES.items()):
        for sd, n in ((0.05, 3), (0.1, 3), (0.1, 5)):
            samplers = [beta(m, sd) for m in means]
            rng = np.random.default_rng([300, k, n, int(sd * 100)])
            hit = right = 0
            for r in range(reps):
                pts = [Point(x, {i: {"retention": v} for i, v in enumerate(scores(rng, s, (n,)))}, 0)
                       for x, s in zip(THRESHOLD_XS, samplers, strict=True)]
                x_star, lo, hi = threshold(pts, n_resamples=n_resamples, seed=r)
                hit += lo <= 0.1 <= hi
                right += x_star == 0.1
            lines.append(f"| {label} | {n} | {sd} | {hit / reps:.3f} | {right / reps:.3f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2000, help="simulated experiments per cell (point table)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval")
    ap.add_argument("--rliable-reps", type=int, default=300, help="experiments per n = 3 cell for rliable (0: skip)")
    ap.add_argument("--only", choices=("point", "slope", "iqm", "threshold"), nargs="*")
    a = ap.parse_args()
    tables = {"point": lambda: point_table(a.reps, a.resamples, a.rliable_reps),
              "slope": lambda: slope_table(a.reps // 2, a.resamples),
              "iqm": lambda: iqm_table(a.reps // 2, a.resamples),
              "threshold": lambda: threshold_table(a.reps // 4, a.resamples)}
    for name in a.only or tables:
        t0 = time.time()
        print(f"## {name} (nominal 0.95)\n")
        print("\n".join(tables[name]()))
        print(f"\n({time.time() - t0:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
