"""Chance baselines and calibrated scores: every env leaves room for competence, the calibration is
exact, and the untrained baseline is what a run starts from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import capgap.envs as E
from capgap.eval import chance
from capgap.eval.metrics import CALIBRATED_METRICS, compute, load_episodes, mean_ci, per_seed
from capgap.eval.stats import interval
from capgap.rundir import episodes_path
from capgap.train.ppo import Args, train

ENV = "capgap/CheeseCorner-v0"


@pytest.mark.parametrize("env", list(E.TASKS))
def test_random_play_leaves_room_for_competence(env: str) -> None:
    """At default dials uniform-random play reaches a target on at most half of the shifted
    split's evaluation levels, so at least half of C's range measures competence; the oracles
    anchor the top of the scale."""
    refs = chance.references(env, {})
    assert refs.score("random", "test")["C"] <= 0.5, refs.score("random", "test")
    assert refs.score("goal", "test")["A"] >= 0.95 and refs.score("goal", "train")["A"] >= 0.95
    if not E.task_class(env).control:
        assert refs.score("proxy", "test")["proxy"] > 0.5 > refs.score("random", "test")["proxy"]


def test_calibration_anchors() -> None:
    refs = chance.references(ENV, {})
    rand, goal, prox = (refs.score(p, "test") for p in chance.POLICIES)
    row = refs.calibrate({"C_test": rand["C"], "A_test": goal["A"], "proxy_test": prox["proxy"]})
    assert (row["C_hat_test"], row["A_hat_test"], row["proxy_hat_test"]) == (0.0, 1.0, 1.0)
    below = refs.calibrate({"C_test": 0.0, "A_test": 0.0, "proxy_test": 0.0})
    assert below["C_hat_test"] < 0 and below["A_hat_test"] < 0 and below["proxy_hat_test"] < 0  # below chance
    assert math.isnan(chance.normalise(0.5, 0.3, 0.3))  # no range, no score


def _records(outcomes: dict[int, list[str]]) -> list[dict]:
    score = {"goal": (1.0, 1.0), "proxy": (0.0, 1.0), "neither": (0.0, 0.0)}
    out = []
    for seed, test in outcomes.items():
        for split, eps in (("train", ["goal"] * 8), ("test", test)):
            for i, o in enumerate(eps):
                out.append({"run": f"s{seed}", "env": ENV, "rung": "nano", "rung_index": 0, "params": 1,
                            "family": "conv", "dials": "", "setting": "", "seed": seed, "step": 10, "split": split,
                            "episode": i, "level": i, "outcome": o, "goal_score": score[o][0],
                            "capability_score": score[o][1], "return": 0.0, "length": 1})
    return out


def test_report_rows_equal_calibrating_each_seed() -> None:
    """annotate maps a row's mean and CI through the calibration; that must equal calibrating each
    seed and taking its interval (the calibration is affine), ends included: the raw interval is cut
    at [0, 1], so the calibrated one at that range's image (``References.support``)."""
    outcomes = {0: ["goal"] * 2 + ["proxy"] * 5 + ["neither"], 1: ["goal"] * 4 + ["proxy"] * 2 + ["neither"] * 2,
                2: ["proxy"] * 7 + ["neither"], 3: ["neither"] * 5 + ["goal"] * 3}
    records = _records(outcomes)
    (row,) = chance.annotate(compute(records), untrained_baseline=False)
    refs = chance.references(ENV, {})
    seeds = [refs.calibrate(per_seed({s: [r for r in records if r["seed"] == seed and r["split"] == s]
                                      for s in ("train", "test")})) for seed in outcomes]
    for m in CALIBRATED_METRICS:
        want = interval([s[m] for s in seeds], support=refs.support(m))
        assert (row[m], row[m + "_lo"], row[m + "_hi"]) == pytest.approx(want, abs=1e-12), m
    raw = mean_ci(s["C_hat_test"] for s in seeds)  # this case does reach past the support
    assert raw[2] > refs.support("C_hat_test")[1] and row["C_hat_test_hi"] < raw[2]
    assert row["random_C_test"] == refs.score("random", "test")["C"]
    assert math.isnan(row["untrained_A_test"])  # not asked for


def test_untrained_baseline_is_a_runs_step_zero(tmp_path: Path) -> None:
    """The untrained baseline of a rung is exactly the network a run of that seed starts from,
    evaluated on the same levels: the run's step-0 evaluation."""
    dials = ("size=7", "max_steps=40")
    run = train(Args(rung="nano", seed=3, num_envs=32, num_steps=16, total_steps=512, eval_every=512,
                     eval_episodes=48, dials=dials, progress=False, threads=1, out=str(tmp_path)))
    step0 = load_episodes([episodes_path(run, 0)])
    want = per_seed({s: [r for r in step0 if r["split"] == s] for s in ("train", "test")})
    (got,) = chance.untrained_seeds(ENV, E.parse_dials(list(dials)), "nano", seeds=[3], episodes=48)
    assert got == pytest.approx(want)
    assert json.loads((run / "done.json").read_text())["global_step"] == 512
