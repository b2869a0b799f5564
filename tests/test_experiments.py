"""The experiment scripts' logic on small runs (the studies themselves are in docs/results.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from capgap.train.ppo import Args, train


def load(name: str) -> ModuleType:
    path = Path(__file__).parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_family_comparison_reads_steps_to_learn_and_measures_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fc = load("family_comparison")
    run = train(Args(rung="nano", num_envs=64, num_steps=32, total_steps=64 * 32 * 4, eval_every=64 * 32 * 2,
                     eval_episodes=32, dials=("size=7", "max_steps=40"), progress=False, threads=1,
                     out=str(tmp_path / "sweep" / "runs")))
    rows = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    train_a = {r["step"]: r["A"] for r in rows if r["split"] == "train"}
    hit, last, a_end = fc.steps_to_learn(run)
    assert last == max(train_a) and a_end == train_a[last]
    assert hit == next((s for s in sorted(train_a) if train_a[s] >= 0.9), None)  # a 12k-step nano: None
    real_sps = fc.training_sps
    monkeypatch.setattr(fc, "training_sps", lambda *a, **k: 1000.0)  # the table's logic; real speed below
    monkeypatch.setattr("sys.argv", ["family_comparison.py", str(tmp_path / "sweep")])
    fc.main()
    out = capsys.readouterr().out
    assert "| conv | nano | 441 | 7 | 0 | not by 8,192 |" in out and "| 1,000 | > 0.1 min |" in out, out
    assert real_sps("capgap/CheeseCorner-v0", "nano", "conv", ("size=7", "max_steps=40"), 1, iterations=3) > 0


def test_arm_difference_pairs_points_and_tells_apart_only_arms_that_differ() -> None:
    from capgap.eval.mitigation import Point

    ad = load("arm_difference")

    def pt(x: float, a: list[float]) -> Point:
        return Point(x, {s: {"A_test": v} for s, v in enumerate(a)}, 0)

    same = [0.30, 0.32, 0.29, 0.31, 0.30]
    a = {("capgap/E-v0", "small", 3, 1.0): pt(1, same), ("capgap/E-v0", "small", 3, 10.0): pt(10, [0.6, 0.62, 0.58]),
         ("capgap/E-v0", "small", 3, 100.0): pt(100, [0.7])}
    b = {("capgap/E-v0", "small", 3, 1.0): pt(1, [v + 0.005 for v in same]),
         ("capgap/E-v0", "small", 3, 10.0): pt(10, [0.3, 0.31, 0.29, 0.3])}
    rows = ad.rows(a, b, "A_test")
    assert [r[2] for r in rows] == [1.0, 10.0]  # only the points both arms hold
    (_, _, _, na, ma, nb, mb, d0), (*_, d1) = rows
    assert (na, nb) == (5, 5) and ma == pytest.approx(sum(same) / 5) and mb == pytest.approx(ma + 0.005)
    assert d0[1] < 0 < d0[2]  # arms that agree: the interval holds 0
    assert d1[1] > 0 and d1[0] == pytest.approx(0.6 - 0.3)  # arms that differ: it excludes 0


def test_arm_difference_picks_an_arm_out_of_a_sweep_and_refuses_an_ambiguous_one() -> None:
    ad = load("arm_difference")

    def recs(setting: str, p: float, seed: int, a_test: float, n: int = 20) -> list[dict]:
        run = {"env": "capgap/E-v0", "dials": f"p_disambiguate={p}", "setting": setting, "rung": "small",
               "rung_index": 3, "params": 1, "step": 100, "seed": seed}
        return [{**run, "split": split, "goal_score": float(i < a * n), "capability_score": 1.0, "outcome": "goal"}
                for split, a in (("train", 1.0), ("test", a_test)) for i in range(n)]

    arms = lambda p: (("", 0.3 + p * 10), ("sampler=plr-oracle", 0.5))  # noqa: E731
    sweep = [r for seed in (0, 1, 2) for p in (0, 0.01) for setting, a in arms(p)
             for r in recs(setting, p, seed, a + 0.05 * seed)]
    axis, dr = ad.arm_of(sweep, "sweep", "sampler=dr")  # dr is the default: records leave it out
    _, plr = ad.arm_of(sweep, "sweep", "sampler=plr-oracle")
    assert axis == "p_disambiguate" and set(dr) == set(plr) == {("capgap/E-v0", "small", 3, x) for x in (0.0, 0.01)}
    (*_, d0), (*_, d1) = ad.rows(plr, dr, "A_test")
    assert d0[0] == pytest.approx(0.2) and d1[0] == pytest.approx(0.1)
    with pytest.raises(SystemExit, match="two arms of sweep share"):
        ad.arm_of(sweep, "sweep")
