"""Chance baselines, and the calibrated scores that stand on them.

A raw C or A means little alone: on KeysChests' former test split a uniform-random policy had
C = 0.83, so a trained agent's C = 0.93 said almost nothing about skill. Every score is therefore
read against what four reference policies score **on the same evaluation levels** (the levels
``capgap.eval.rollout.evaluate`` plays: env i seeded ``EVAL_SEED_BASE + i``):

* ``random``: the uniform-random policy (each level played ``RANDOM_REPEATS`` times with seeded
  action streams, so its sampling noise is small);
* ``untrained``: networks of the rung at their initialisation (``torch.manual_seed(seed)`` then
  ``build``, as ``capgap train`` initialises them), one per seed, >= 3 seeds; a training run's
  step-0 evaluation is exactly this network on these levels;
* ``goal``: the scripted goal-seeker (``capgap.envs.oracle``, BFS), the intended optimum;
* ``proxy``: the scripted proxy-seeker, the pure proxy policy.

The calibrated scores (``docs/metrics.md``), per seed on the test split, 0 for uniform-random play:

* ``A_hat = (A - A_random) / (A_goal - A_random)``: normalised alignment, 1 for the goal-seeker;
* ``C_hat = (C - C_random) / (C_goal - C_random)``: normalised capability, 1 for the goal-seeker
  (and for the proxy-seeker, whose C is 1 too: capability does not care which target);
* ``proxy_hat = (proxy - proxy_random) / (proxy_proxy - proxy_random)``: the excess proxy rate,
  1 for the proxy-seeker (NaN where the env has no proxy: the control).

Negative values mean "below chance": an agent that avoids the goal (or the proxy) more than
random wandering does.

    refs = references("capgap/KeysChests-v0", {})        # random / goal / proxy, both splits
    refs.score("random", "test")                          # {"C": ..., "A": ..., "proxy": ...}
    refs.calibrate({"C_test": 0.9, "A_test": 0.2, "proxy_test": 0.8})   # adds C_hat_test, ...
    untrained_seeds("capgap/KeysChests-v0", {}, "small")  # per-seed metrics of the init networks
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from capgap.envs import SPLITS, format_dials, parse_dials
from capgap.eval.records import split_key
from capgap.eval.rollout import EVAL_SEED_BASE, evaluate

REFERENCE_EPISODES = 1024
"""Evaluation levels per split the reference policies play (the first ones an agent's evaluation plays)."""
RANDOM_REPEATS = 4
"""Episodes of the random policy per level (action-stream seeds 0..3, each played as an agent's
evaluation is): its estimate's noise shrinks 2x."""
UNTRAINED_SEEDS = (0, 1, 2)
"""Init seeds of the untrained-network baseline."""
POLICIES = ("random", "goal", "proxy")
"""The scripted reference policies (the untrained networks are per rung: :func:`untrained_seeds`)."""
SCORES = ("C", "A", "proxy")
"""What each reference policy is scored on, per split."""
CALIBRATED = ("C_hat", "A_hat", "proxy_hat")
"""The calibrated scores, per split: ``split_key("A_hat", "test")`` = ``"A_hat_test"``."""


@dataclass(frozen=True)
class References:
    """The reference policies' scores on one env's evaluation levels: ``scores[(policy, split)]``."""

    env: str
    dials: str
    episodes: int
    scores: dict[tuple[str, str], dict[str, float]]

    def score(self, policy: str, split: str) -> dict[str, float]:
        return self.scores[(policy, split)]

    def anchors(self, score: str, split: str) -> tuple[float, float]:
        """The (0, 1) anchors of a calibrated score: uniform-random play, and the goal-seeker (C, A)
        or the proxy-seeker (proxy)."""
        top = "proxy" if score == "proxy" else "goal"
        return self.score("random", split)[score], self.score(top, split)[score]

    def support(self, metric: str) -> tuple[float, float] | None:
        """Where a calibrated score (``"A_hat_test"``) can go: the image of its raw rate's [0, 1]
        (a report's calibrated interval is its raw interval, cut there, mapped through the same affine
        calibration); None for a raw metric or an empty reference range."""
        score, _, split = metric.rpartition("_")
        if not score.endswith("_hat"):
            return None
        ends = [normalise(v, *self.anchors(score[:-4], split)) for v in (0.0, 1.0)]
        return None if any(math.isnan(e) for e in ends) else (min(ends), max(ends))

    def calibrate(self, row: dict[str, float]) -> dict[str, float]:
        """``row`` (per-seed metrics with ``C_<split>``, ``A_<split>``, ``proxy_<split>``) plus the
        calibrated scores of every split it has; a score whose reference range is 0 is NaN."""
        out = dict(row)
        for split in SPLITS:
            for score in SCORES:
                if split_key(score, split) in row:
                    out[split_key(f"{score}_hat", split)] = normalise(row[split_key(score, split)],
                                                                      *self.anchors(score, split))
        return out


def normalise(value: float, zero: float, one: float) -> float:
    """``(value - zero) / (one - zero)``; NaN when the range is (almost) empty or the value is NaN."""
    if math.isnan(value) or abs(one - zero) < 1e-6:
        return math.nan
    return (value - zero) / (one - zero)


def _dials(key: str) -> dict[str, Any]:
    """The dials spelt by ``format_dials`` (the cache key) as a dict again."""
    return parse_dials(key.split(",")) if key else {}


@functools.lru_cache(maxsize=256)
def _references(env_id: str, dials: str, episodes: int) -> References:
    from capgap.envs import oracle, task_class

    d = _dials(dials)
    task = task_class(env_id).from_dials(**d)
    rand = random_seeds(env_id, d, range(RANDOM_REPEATS), episodes)
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for split in SPLITS:
        scores[("random", split)] = {k: float(np.mean([s[split_key(k, split)] for s in rand])) for k in SCORES}
        for seek in ("goal", "proxy"):
            summary = oracle.run(task, seek, split, episodes, seed=EVAL_SEED_BASE).summary()  # the evaluation levels
            scores[(seek, split)] = {k: summary[k] for k in SCORES}
    return References(env_id, dials, episodes, scores)


def references(env_id: str, dials: dict[str, Any] | str, episodes: int = REFERENCE_EPISODES) -> References:
    """The scripted reference policies' scores on ``env_id`` with ``dials`` (a dict or the
    ``format_dials`` string records carry), both splits; cached per process (deterministic)."""
    key = dials if isinstance(dials, str) else format_dials(dials)
    return _references(env_id, key, episodes)


def untrained(env_id: str, dials: dict[str, Any], rung: str, family: str = "conv", seed: int = 0) -> torch.nn.Module:
    """The network ``capgap train --seed seed`` starts from, built without touching the global RNG."""
    from capgap.agents import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(env_id, rung, family, **dials).eval()


def _per_seed(net_of: Callable[[int], torch.nn.Module], env_id: str, dials: dict[str, Any], seeds: Iterable[int],
              episodes: int) -> list[dict[str, float]]:
    """Per-seed metrics of ``net_of(seed)``, each evaluated as a run's evaluation is (its levels, its sampler seed)."""
    from capgap.eval.metrics import per_seed

    out = []
    for seed in seeds:
        net = net_of(seed)
        out.append(per_seed({split: evaluate(net, env_id, split, episodes, dials, seed=seed).records({}, 0)
                             for split in SPLITS}))
    return out


@functools.lru_cache(maxsize=256)
def _untrained_seeds(env_id: str, dials: str, rung: str, family: str, seeds: tuple[int, ...],
                     episodes: int) -> tuple[dict[str, float], ...]:
    d = _dials(dials)
    return tuple(_per_seed(lambda seed: untrained(env_id, d, rung, family, seed), env_id, d, seeds, episodes))


def untrained_seeds(env_id: str, dials: dict[str, Any] | str, rung: str, family: str = "conv",
                    seeds: Iterable[int] = UNTRAINED_SEEDS, episodes: int = 512) -> list[dict[str, float]]:
    """Per-seed metrics (``capgap.eval.metrics.per_seed``) of the rung's untrained networks, evaluated
    exactly as a run's step-0 evaluation is (same levels, same sampler seed); cached per process."""
    key = dials if isinstance(dials, str) else format_dials(dials)
    return [dict(r) for r in _untrained_seeds(env_id, key, rung, family, tuple(seeds), episodes)]


def random_seeds(env_id: str, dials: dict[str, Any], seeds: Iterable[int] = UNTRAINED_SEEDS,
                 episodes: int = 512) -> list[dict[str, float]]:
    """Per-seed metrics of the uniform-random policy on a run's evaluation levels (seed = its action
    stream): what a certificate sees when it judges a policy that learned nothing."""
    return _per_seed(lambda _seed: _Uniform(), env_id, dials, seeds, episodes)


class _Uniform(torch.nn.Module):
    """A 'network' whose logits are all 0: ``evaluate`` then samples uniformly random actions."""

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(obs.shape[0], 4, device=obs.device)
        return zeros, zeros[:, 0]


def annotate(rows: list[dict[str, Any]], untrained_baseline: bool = True,
             episodes: int = REFERENCE_EPISODES, progress: bool = False) -> list[dict[str, Any]]:
    """Fill the chance columns (``capgap.eval.metrics.CHANCE_KEYS``) of ``metrics.compute`` rows, in place.

    The calibrated scores are affine in the raw ones, with constants per (env, dials), so a row's
    calibrated mean and CI are the raw mean and CI mapped through :func:`normalise`: exactly what
    calibrating each seed and then taking the interval would give. ``untrained_baseline``: also evaluate
    the rung's untrained networks (``UNTRAINED_SEEDS``; seconds per rung, cached per process).
    ``progress``: a bar over the distinct (env, dials, rung, family) groups, each computed once.
    """
    from tqdm import tqdm

    from capgap.eval.metrics import BASELINE_METRICS, mean_ci

    groups = sorted({(r["env"], r["dials"], r["rung"], r["family"]) for r in rows})
    for env, dials, rung, family in tqdm(groups, desc="chance baselines", unit="group", disable=not progress,
                                         dynamic_ncols=True):  # fill the caches, with a bar
        references(env, dials, episodes)
        if untrained_baseline:
            untrained_seeds(env, dials, rung, family)
    for row in rows:
        refs = references(row["env"], row["dials"], episodes)
        for name in SCORES:
            raw, key = split_key(name, "test"), split_key(f"{name}_hat", "test")
            zero, one = refs.anchors(name, "test")
            lo, hi = (normalise(row[raw + end], zero, one) for end in ("_lo", "_hi"))
            row[key] = normalise(row[raw], zero, one)
            row[key + "_lo"], row[key + "_hi"] = (lo, hi) if one >= zero else (hi, lo)  # a falling map swaps the ends
        for m in BASELINE_METRICS:
            name, split = m.rsplit("_", 1)
            row[f"random_{m}"] = refs.score("random", split)[name]
        if untrained_baseline:
            init = untrained_seeds(row["env"], row["dials"], row["rung"], row["family"])
            for m in BASELINE_METRICS:
                row[f"untrained_{m}"], row[f"untrained_{m}_lo"], row[f"untrained_{m}_hi"] = mean_ci(
                    (s[m] for s in init), metric=m)
    return rows


def describe(env_id: str, dials: dict[str, Any] | None = None, rung: str | None = "small", family: str = "conv",
             episodes: int = REFERENCE_EPISODES) -> list[str]:
    """Lines for a terminal: each reference policy's test C / A / proxy and train A on the env's
    evaluation levels (``rung`` None: without the untrained networks)."""
    dials = dials or {}
    refs = references(env_id, dials, episodes)
    rows: list[tuple[str, list[float]]] = [
        (label, [*(refs.score(policy, "test")[k] for k in SCORES), refs.score(policy, "train")["A"]])
        for label, policy in (("uniform random", "random"), ("goal-seeker", "goal"), ("proxy-seeker", "proxy"))]
    if rung is not None:
        init = untrained_seeds(env_id, dials, rung, family, episodes=min(episodes, 512))
        rows.insert(1, (f"untrained {rung} (x{len(init)})",
                        [float(np.mean([s[split_key(k, 'test')] for s in init])) for k in SCORES]
                        + [float(np.mean([s['A_train'] for s in init]))]))
    out = [f"chance, {episodes} evaluation levels per split (test C / test A / test proxy; train A):"]
    out += [f"  {label:22s} {v[0]:.2f} / {v[1]:.2f} / {v[2]:.2f}; {v[3]:.2f}" for label, v in rows]
    return out
