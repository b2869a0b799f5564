"""Intervals over a few seeds: what capgap prints as "mean [lo, hi]", and why.

A result in capgap is a number per training seed (one seed's mean over its 512-odd evaluation
episodes), and there are few seeds: 3 in a sweep, 5 to 10 in a study. Every interval here is an
interval *over seeds*: it says where the mean over all possible seeds lies, given the few we ran.
Episodes are not the unit of replication (the seed is), so an interval never narrows with more
episodes alone.

The methods
-----------
- **Student-t interval** (:func:`interval`, the one capgap uses for every point):
  ``mean ± t(0.975, n-1) · s / √n`` with ``s`` the sample standard deviation over the n seeds.
  Exact when the seed values are normal; the t quantile (4.30 at n = 3, 2.78 at n = 5, 2.26 at
  n = 10) pays for estimating ``s`` from n seeds. It is zero-width only when the seeds agree
  exactly, and any disagreement widens it.
- **Percentile bootstrap** (what capgap used before; :func:`percentile_bootstrap`): resample the
  n seeds with replacement, take the 2.5 and 97.5 percentiles of the resampled means. At n = 3
  there are only 10 distinct resamples, the resampled means spread like ``s·√((n-1)/n)/√n``
  (no t correction, and a further shrink by √(2/3)), and the interval is far too short.
- **BCa** (bias-corrected and accelerated bootstrap; ``scipy.stats.bootstrap(method="BCa")``):
  corrects the percentile interval for bias and skew, using a jackknife. Its corrections are
  estimated from the same 3 seeds; it does not fix the missing width.
- **Bootstrap-t**: bootstraps the studentised mean ``(m* - m) / (s* / √n)``. At n = 3 one
  resample in 9 has ``s* = 0`` and the studentised quantiles blow up, giving very wide, erratic
  intervals.
- **rliable's stratified bootstrap** (Agarwal et al. 2021, "Deep RL at the Edge of the
  Statistical Precipice", NeurIPS; https://github.com/google-research/rliable): resamples runs
  *within each task* and recomputes an aggregate over the suite, by default with percentile
  intervals. On one task it *is* the percentile bootstrap above (the coverage script checks this
  against rliable itself). Its strength is the aggregate over many tasks x runs, where the
  resampled quantity pools 15-50 numbers rather than 3; that is how :func:`iqm_ci` uses it.
  rliable 1.2.0 pip-installs, but the resolver pairs its ``arch`` (7.2) with pandas 3, under which
  ``import rliable.library`` fails (``deprecate_kwarg() missing ... 'new_arg_name'``); with
  pandas < 3 it works. It also pulls in arch, statsmodels, pandas and seaborn. capgap therefore
  reimplements the stratified bootstrap (a few lines, :func:`iqm_ci`) and uses rliable only as a
  cross-check in ``experiments/interval_coverage.py``.

Measured coverage (``python experiments/interval_coverage.py``; 2,000 simulated experiments per
cell, 1,000 bootstrap resamples; Monte-Carlo error ±1 percentage point). Each simulated seed
draws its true rate p from a Beta distribution with the given mean and seed-to-seed sd, then
scores Binomial(512, p) / 512: per-seed means of 512 episodes, as ours are. "skew" cases sit near
0 or 1; "bimodal": a quarter of the seeds misgeneralise (p near 0.1, the rest near 0.9).
Nominal 95%:

    ============================  =====================  =====================  =====  ========
    case (seed rate p)            Student-t  n=3/5/10    percentile  n=3/5/10   BCa    rliable
                                                                                n=3    n=3 [*]
    ============================  =====================  =====================  =====  ========
    mid 0.5, sd 0.01              0.95 / 0.95 / 0.95     0.78 / 0.83 / 0.91     0.75   0.79
    mid 0.5, sd 0.05              0.95 / 0.95 / 0.96     0.78 / 0.84 / 0.91     0.75   0.80
    mid 0.5, sd 0.1               0.95 / 0.95 / 0.95     0.74 / 0.84 / 0.91     0.71   0.77
    high 0.9, sd 0.05             0.93 / 0.93 / 0.93     0.73 / 0.84 / 0.89     0.71   0.69
    skew 0.97, sd 0.03            0.90 / 0.89 / 0.91     0.71 / 0.80 / 0.86     0.70   0.70
    skew 0.03, sd 0.03            0.89 / 0.89 / 0.91     0.69 / 0.81 / 0.87     0.68   0.65
    skew 0.05, sd 0.1 (mass at 0) 0.68 / 0.73 / 0.80     0.56 / 0.66 / 0.78     0.56   0.58
    bimodal, 1/4 of seeds at 0.1  0.58 / 0.75 / 0.94     0.57 / 0.74 / 0.92     0.57   0.57
    ============================  =====================  =====================  =====  ========

    [*] rliable 1.2.0's ``get_interval_estimates`` on one task, 300 experiments (±2.5 points): the
    percentile bootstrap again. Bootstrap-t at n = 3 returns (-inf, inf) in 95-100% of experiments.
    Mean width at n = 3, mid 0.5 / sd 0.05: t 0.25, percentile 0.095 (2.6x narrower).

Reading it: the percentile bootstrap (and so rliable's default on one task) covers 69-78% at
n = 3, not 95%, and is still short at n = 10; BCa is no better at n = 3; bootstrap-t is useless
there (infinite). The t-interval covers 93-96% on the roughly symmetric cases and 89-91% on the
skewed ones, where the bootstrap covers 69-71%. Two cases defeat every method at 3 seeds: a
misgeneralising mode a quarter of the seeds fall into (all three seeds miss it 42% of the time,
and then nothing in the data says it exists) and rates piled at 0 with a long tail. The t-interval
is never worse than the percentile bootstrap or BCa at n <= 5, and its width pays for small n.
Bootstrap-t does better on the long-tailed case from n = 5 on (0.94 against 0.73), but is infinite
at n = 3, our usual count. capgap uses the t-interval at every n, so one rule reads everywhere.
No interval is clipped to [0, 1]: clipping would not change coverage, but the width would then
hide how few seeds there are. Tables for the slope, the IQM and the mitigation threshold:
docs/metrics.md, "Intervals: why this method".

Aggregates and trends
---------------------
- :func:`iqm_ci`: the interquartile mean (25% trimmed mean) over all runs of all tasks, with
  rliable's stratified bootstrap (runs resampled within each task, tasks kept): the suite-level
  summary Agarwal et al. recommend, robust to a few outlier tasks or seeds.
- :func:`slope_ci`: the least-squares slope of a metric's rung means against log10(parameters).
  The rungs are a fixed design, so the slope is a fixed linear combination ``Σ w_r · mean_r`` of
  independent rung means, and its variance is ``Σ w_r² s_r² / n_r``; the interval is a t-interval
  with Welch-Satterthwaite degrees of freedom (each rung keeps its own seed variance; nothing
  assumes the rung means lie on a line: the estimand is the least-squares slope through the true
  rung means). The alternative, a stratified bootstrap over seeds within rungs, inherits the
  percentile bootstrap's under-coverage (see the slope table in ``docs/metrics.md``).
- :func:`verdict`: grows / flat / shrinks / inconclusive from a slope's interval and a flat band.

All randomness takes an explicit seed: the same inputs give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
"""The coverage every interval aims at."""
FLAT_BAND = 0.05
"""Default half-width of "flat" for :func:`verdict`: a slope within ±0.05 per tenfold parameters
(about ±0.15 over the ladder nano..large, three decades) counts as no trend."""
VERDICTS = ("grows", "flat", "shrinks", "inconclusive")
"""The four verdicts; an inconclusive one whose interval excludes 0 says which side (``"inconclusive, CI > 0"``)."""


def _finite(values: Iterable[float]) -> np.ndarray:
    """The values that are not NaN, as a float array."""
    x = np.asarray([float(v) for v in values], dtype=float)
    return x[~np.isnan(x)]


def t_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised Student-t interval over the last axis of ``x`` (no NaNs, at least 2 values):
    (mean, lo, hi), each of shape ``x.shape[:-1]``."""
    n = x.shape[-1]
    m = x.mean(-1)
    half = st.t.ppf(0.5 + confidence / 2, n - 1) * x.std(-1, ddof=1) / math.sqrt(n)
    return m, m - half, m + half


def interval(values: Iterable[float], confidence: float = CONFIDENCE,
             support: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean over seeds and its Student-t confidence interval.

    NaNs are dropped first. No values: (nan, nan, nan). One value: (m, nan, nan), since one seed
    has no interval (tables print "(1 seed)"). All values exactly equal: (m, m, m), the only way to
    a zero-width interval; any disagreement between seeds gives a positive width that grows with
    their spread and shrinks like t(n-1)/√n.

    ``support``: the (lo, hi) every value can take, e.g. (0, inf) for steps to learn. A t-interval
    over 2-3 spread-out seeds can reach past it ("339k [-26k, 703k]"), and since the mean of values
    in the support lies in the support, the interval is cut there: the same coverage, no impossible
    bound.
    """
    x = _finite(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if x.size == 1:
        return m, math.nan, math.nan
    if np.all(x == x[0]):
        return m, m, m
    _, lo, hi = t_bounds(x, confidence)
    if support is not None:
        lo, hi = max(lo, support[0]), min(hi, support[1])
    return m, float(lo), float(hi)


def percentile_bootstrap(x: np.ndarray, n_resamples: int = 2000, seed: int | np.random.Generator = 0,
                         confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The percentile bootstrap of the mean over the last axis of ``x`` (capgap's former method, kept
    to measure it against; it under-covers at few seeds): (mean, lo, hi) of shape ``x.shape[:-1]``."""
    rng = np.random.default_rng(seed)
    n = x.shape[-1]
    idx = rng.integers(0, n, size=(*x.shape[:-1], n_resamples, n))
    means = np.take_along_axis(x[..., None, :], idx, axis=-1).mean(-1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail], axis=-1)
    return x.mean(-1), lo, hi


def iqm(x: Iterable[float] | np.ndarray) -> float:
    """The interquartile mean: the mean of the middle 50% of the values (NaNs dropped), i.e.
    ``scipy.stats.trim_mean(x, 0.25)`` as rliable's ``aggregate_iqm``; NaN for no values."""
    v = _finite(np.ravel(np.asarray(x, dtype=float)))
    return float(st.trim_mean(v, 0.25)) if v.size else math.nan


def _tasks(scores_by_task: Mapping[str, Iterable[float]] | Sequence[Iterable[float]]) -> list[np.ndarray]:
    groups = scores_by_task.values() if isinstance(scores_by_task, Mapping) else scores_by_task
    return [v for v in (_finite(g) for g in groups) if v.size]


def iqm_ci(scores_by_task: Mapping[str, Iterable[float]] | Sequence[Iterable[float]], n_resamples: int = 2000,
           seed: int = 0, confidence: float = CONFIDENCE, expand: bool = True) -> tuple[float, float, float]:
    """(IQM, lo, hi) over a suite: the IQM of all runs of all tasks, with the stratified bootstrap
    of rliable (Agarwal et al. 2021): each resample draws every task's runs with replacement
    *within that task* (so each task keeps its number of runs and the suite keeps its tasks), the
    IQM is recomputed, and the interval is the percentile interval of the resampled IQMs.

    ``scores_by_task``: task -> its runs' scores (one per seed), or a sequence of such lists; tasks
    may have different numbers of runs; NaNs are dropped. No scores: all NaN. If every task has a
    single run there is nothing to resample: (IQM, nan, nan). Deterministic given ``seed``.
    """
    tasks = _tasks(scores_by_task)
    if not tasks:
        return math.nan, math.nan, math.nan
    point = iqm(np.concatenate(tasks))
    if all(t.size == 1 for t in tasks):
        return point, math.nan, math.nan
    if expand:
        tasks = [t.mean() + (t - t.mean()) * math.sqrt(t.size / (t.size - 1)) if t.size > 1 else t for t in tasks]
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([t[rng.integers(0, t.size, size=(n_resamples, t.size))] for t in tasks], axis=1)
    boot = st.trim_mean(resampled, 0.25, axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return point, float(lo), float(hi)


def _slope_weights(x: np.ndarray) -> np.ndarray:
    """w with ``Σ w_r y_r`` = the least-squares slope of y on x."""
    d = x - x.mean()
    return d / float(d @ d)


def slope_ci(log10_params: Sequence[float], values: Sequence[Iterable[float]], confidence: float = CONFIDENCE,
             method: str = "t", n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(slope, lo, hi): the least-squares slope of the rung means of a metric against log10(params),
    per tenfold parameters, and its confidence interval over seeds.

    ``log10_params[r]`` is rung r's log10 parameter count and ``values[r]`` its per-seed values
    (NaNs dropped; a rung left with none is dropped). Every rung counts once, however many seeds
    it has. ``method="t"`` (default): ``slope ± t(df) · √(Σ w_r² s_r² / n_r)`` with
    Welch-Satterthwaite df, where ``w`` are the least-squares weights and ``s_r`` rung r's seed sd;
    ``method="bootstrap"``: a stratified bootstrap (each rung's seeds resampled within the rung,
    slope recomputed, percentile interval), kept for comparison: it under-covers at 3 seeds.

    Fewer than two distinct rungs: all NaN. A rung that matters (non-zero weight) with one seed
    has no variance estimate: (slope, nan, nan). Every rung's seeds exactly equal: zero width.
    """
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method {method!r} is not 't' or 'bootstrap'")
    if len(log10_params) != len(values):
        raise ValueError(f"{len(log10_params)} rungs but {len(values)} lists of values")
    pairs = [(float(x), v) for x, v in zip(log10_params, (_finite(v) for v in values), strict=True) if v.size]
    x = np.array([p[0] for p in pairs])
    if len(pairs) < 2 or np.all(x == x[0]):
        return math.nan, math.nan, math.nan
    ys = [p[1] for p in pairs]
    w = _slope_weights(x)
    slope = float(w @ np.array([y.mean() for y in ys]))
    if any(y.size < 2 and wr != 0 for y, wr in zip(ys, w, strict=True)):
        return slope, math.nan, math.nan
    if all(np.all(y == y[0]) for y in ys):
        return slope, slope, slope
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.stack([y[rng.integers(0, y.size, size=(n_resamples, y.size))].mean(1) for y in ys], axis=1)
        tail = (1 - confidence) / 2
        lo, hi = np.quantile(means @ w, [tail, 1 - tail])
        return slope, float(lo), float(hi)
    a = np.array([wr * wr * (y.var(ddof=1) if y.size > 1 else 0.0) / y.size for y, wr in zip(ys, w, strict=True)])
    var = float(a.sum())
    if var == 0:  # only rungs with zero weight disagree
        return slope, slope, slope
    df = var * var / sum(ar * ar / (y.size - 1) for ar, y in zip(a, ys, strict=True) if ar > 0)
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(var)
    return slope, slope - half, slope + half


def difference(a: Iterable[float], b: Iterable[float], confidence: float = CONFIDENCE
               ) -> tuple[float, float, float]:
    """(d, lo, hi): the difference of means ``mean(a) - mean(b)`` of two independent groups of seeds
    (two arms of a study at one point) and its Welch t-interval, ``d ± t(df) · √(s_a²/n_a + s_b²/n_b)``
    with Welch-Satterthwaite df. NaNs are dropped first.

    A group with no values: all NaN. A group with one seed has no variance estimate: (d, nan, nan).
    Both groups' seeds exactly equal within each group: zero width, the only way to it; otherwise
    the width grows with either group's spread.
    """
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan, math.nan
    d = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return d, math.nan, math.nan
    if np.all(x == x[0]) and np.all(y == y[0]):
        return d, d, d
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    var = float(va + vb)
    df = var * var / sum(v * v / (n - 1) for v, n in ((va, x.size), (vb, y.size)) if v > 0)
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(var)
    return d, d - half, d + half


def verdict(slope: float, lo: float, hi: float, flat_band: float = FLAT_BAND) -> str:
    """A trend in words from its interval [lo, hi] and the flat band ±``flat_band``:

    - ``"grows"``: the whole interval lies above +flat_band (lo > flat_band);
    - ``"shrinks"``: the whole interval lies below -flat_band (hi < -flat_band);
    - ``"flat"``: the whole interval lies inside the band (-flat_band ≤ lo and hi ≤ flat_band);
    - ``"inconclusive"``: anything else (the interval straddles a band edge), or no interval (NaN);
      ``"inconclusive, CI > 0"`` (``< 0``) where the interval still excludes 0: a trend whose sign is
      known but whose size may be under the band.

    The confidence of a verdict is that of the interval: at 95%, "grows" is wrong at most 2.5% of
    the time when the true slope is at most +flat_band (one-sided), and likewise for the others.
    """
    if any(math.isnan(v) for v in (slope, lo, hi)):
        return "inconclusive"
    if lo > flat_band:
        return "grows"
    if hi < -flat_band:
        return "shrinks"
    if -flat_band <= lo and hi <= flat_band:
        return "flat"
    return "inconclusive, CI > 0" if lo > 0 else "inconclusive, CI < 0" if hi < 0 else "inconclusive"


def scaling_rows(per_env: Mapping[str, tuple[Sequence[float], Sequence[Iterable[float]]]],
                 flat_band: float = FLAT_BAND) -> list[dict[str, object]]:
    """One row per env of a suite: ``env -> (log10_params per rung, per-seed values per rung)`` in,
    ``{env, rungs, seeds, slope, lo, hi, verdict}`` out (``seeds``: the per-rung seed counts, e.g.
    ``"3,3,3,2"``, so every slope states its n), in the order given."""
    rows: list[dict[str, object]] = []
    for env, (x, values) in per_env.items():
        counts = [int(_finite(v).size) for v in values]
        slope, lo, hi = slope_ci(x, values)
        rows.append({"env": env, "rungs": sum(c > 0 for c in counts), "seeds": ",".join(map(str, counts)),
                     "slope": slope, "lo": lo, "hi": hi, "verdict": verdict(slope, lo, hi, flat_band)})
    return rows


def verdict_table(rows: Sequence[Mapping[str, object]], metric: str = "gap_test",
                  flat_band: float = FLAT_BAND) -> list[str]:
    """The markdown lines of a suite's verdict table (:func:`scaling_rows`), with its rule under it."""
    from capgap.eval.table import ci, markdown

    lines = markdown(["env", "rungs", "seeds per rung", f"slope of {metric} per 10x params [95% CI]", "verdict"],
                     [[r["env"], r["rungs"], r["seeds"], ci(r["slope"], r["lo"], r["hi"], 3), r["verdict"]]
                      for r in rows])
    return [*lines, "", f"Least-squares slope of the rung means against log10(parameters), Welch t-interval over "
            f"seeds (capgap.eval.stats.slope_ci). grows: CI above +{flat_band}; shrinks: CI below -{flat_band}; "
            f"flat: CI within ±{flat_band}; else inconclusive (saying so where the CI still excludes 0)."]
