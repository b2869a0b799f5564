"""The scaling study end to end on a CI-sized suite: two envs, two rungs, two seeds, trained to
competence with tiny budgets; the report's views, verdicts, figures and TensorBoard read back."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import capgap.envs as E
from capgap.eval import scaling as S
from capgap.eval.metrics import load_episodes
from capgap.train import scaling
from capgap.train.cli import main

ENVS = ["capgap/CheeseCorner-v0", "capgap/CheeseDish-v0"]


@contextlib.contextmanager
def tiny_study() -> Iterator[None]:
    """The study's settings shrunk to CI size: 32,768-step budgets (a 65,536-step cap), 2 seeds, 64
    evaluation levels, an evaluation every 4,096 steps (every iteration)."""
    mp = pytest.MonkeyPatch()
    for env in ENVS:
        mp.setattr(E.task_class(env), "budget", 32768)
    mp.setattr(scaling, "SEEDS_UP_TO_SMALL", 2)
    mp.setattr(scaling, "EPISODES", 64)
    mp.setattr(scaling, "EVALS_PER_BUDGET", 8)
    try:
        yield
    finally:
        mp.undo()


ARGV = ["--envs", *ENVS, "--rungs", "nano,tiny", "--dials", "size=5", "max_steps=20", "--workers", "2",
        "--no-progress"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 5x5 CheeseCorner and CheeseDish mazes, nano and tiny, two seeds each, to competence: tiny
    learns the maze well within the cap (tests/configs.py LEARNS), nano need not."""
    out = tmp_path_factory.mktemp("study")
    with tiny_study():
        assert main(["scaling", "--out", str(out), *ARGV]) == 0
    return out


@pytest.mark.heavy
def test_the_study_reports_every_run_with_its_n(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds, unfinished = S.load([d for env in ENVS for d in (study / env.split("/")[-1]).iterdir() if d.is_dir()])
    assert unfinished == 0 and len(seeds) == 2 * 2 * 2
    assert all(s.stopped_at <= 2 * 32768 for s in seeds)  # the cap: two budgets
    learned = [s for s in seeds if s.learned]
    assert any(s.env == ENVS[0] and s.rung == "tiny" for s in learned), [(s.env, s.rung, s.learned) for s in seeds]
    assert all(s.learned_at < s.stopped_at < 2 * 32768 for s in learned)  # stopped at competence, before the cap
    md = (study / "scaling.md").read_text()
    assert "Learned / finished per rung: nano" in md and "## Verdict: gap_test" in md and "size=5" not in md
    data = json.loads((study / "scaling.json").read_text())
    assert "gap opens at" in md
    for row in data["rungs"]:
        assert row["n"] == 2 and 0 <= row["n_learned"] <= 2
        assert 0 <= row["n_gap_opened"] <= row["n_learned"]
        if row["n_learned"] < 2:  # fewer than two learned seeds: no interval is claimed
            assert math.isnan(row["C_test_lo"]) if row["n_learned"] == 1 else math.isnan(row["C_test"])
    for name in ("scaling", "steps_to_learn", "curves", "verdict"):
        assert (study / f"{name}.png").stat().st_size > 10_000
    ea = EventAccumulator(str(study / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    assert {f"scaling/{n}" for n in ("scaling", "steps_to_learn", "curves", "verdict")} <= set(ea.Tags()["images"])


@pytest.mark.heavy
def test_rerunning_the_study_trains_nothing(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with tiny_study():
        assert main(["scaling", "--out", str(study), *ARGV]) == 0
    assert "every trial has finished" in capsys.readouterr().out
    # the report's TensorBoard dir is replaced, not added to: one events file, each curve once
    assert len(list((study / "tensorboard").glob("events.out.tfevents.*"))) == 1


@pytest.mark.heavy
def test_a_packed_study_reports_the_same_and_resumes_after_a_wipe(study: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``capgap pack``: finished runs without weights, ~10x smaller, report the same rows; copied back
    into a wiped study's place they are finished, and only the run left unfinished trains again."""
    import shutil

    import numpy as np

    from capgap.rundir import find_episodes, read_done
    from capgap.rundir.pack import read_scalars

    work = tmp_path / "work"
    shutil.copytree(study, work, ignore=shutil.ignore_patterns("tensorboard", "*.png", "scaling.*"))
    runs = sorted(p.parent for p in work.rglob("done.json"))
    unfinished = runs[-1]
    (unfinished / "done.json").unlink()  # as if killed before its end
    packed = tmp_path / "results" / "study"
    assert main(["pack", str(work), str(packed), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert f"packed {len(runs) - 1} finished runs" in said and "1 unfinished left out" in said, said
    size = sum(f.stat().st_size for f in packed.rglob("*") if f.is_file())
    assert size * 5 < sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    assert not list(packed.rglob("checkpoints")) and not list(packed.rglob("events.out.tfevents.*"))
    assert not (packed / unfinished.relative_to(work)).exists()
    assert main(["pack", str(work), str(packed), "--no-progress"]) == 0  # incremental: nothing new
    assert "packed 0 finished runs" in capsys.readouterr().out
    # the same records, so the same report
    a_run = runs[0]
    step = read_done(a_run)["global_step"]
    packed_run = packed / a_run.relative_to(work)
    assert find_episodes(packed_run, step).name.endswith(".jsonl.xz")
    assert load_episodes([find_episodes(packed_run, step)]) == load_episodes([find_episodes(a_run, step)])
    ea = EventAccumulator(str(a_run), size_guidance={"scalars": 0})
    ea.Reload()
    curves = read_scalars(packed_run)  # every TensorBoard scalar, float32-exact
    assert set(curves) == set(ea.Tags()["scalars"]) and "eval/test/A" in curves
    for tag, (steps, values) in curves.items():
        events = ea.Scalars(tag)
        assert steps == [e.step for e in events]
        assert np.array_equal(np.float32(values), np.float32([e.value for e in events])), tag
    for d in (work, packed):
        assert main(["scaling", "--out", str(d), *ARGV, "--report-only"]) == 0
    rows = [json.loads((d / "scaling.json").read_text())["rungs"] for d in (work, packed)]
    assert rows[0] and json.dumps(rows[0]) == json.dumps(rows[1])
    # a wipe: only the packed copy survives; copied back, the study trains only the unfinished run
    shutil.rmtree(work)
    assert main(["pack", str(packed), str(work), "--no-progress"]) == 0
    capsys.readouterr()
    with tiny_study():
        assert main(["scaling", "--out", str(work), *ARGV]) == 0
    assert "1 trials to train" in capsys.readouterr().out
    assert (unfinished / "done.json").exists()
    assert sum(1 for _ in work.rglob("checkpoints")) == 1
    assert main(["pack", str(work), str(packed), "--no-progress"]) == 0
    assert "packed 1 finished runs" in capsys.readouterr().out
    assert main(["pack", str(packed), str(packed / "again"), "--no-progress"]) == 2
    assert "inside" in capsys.readouterr().err


def test_the_estimate_is_printed_before_anything_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scaling", "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "of one core if every run trained to its cap" in out and not (tmp_path / "s").exists()
    for env in E.TASKS:
        assert f"  {env}: " in out
    assert main(["scaling", "--out", str(tmp_path / "s"), "--rungs", "huge"]) == 2


def test_the_learned_rule_needs_two_consecutive_evaluations() -> None:
    curve = {s: {"A_train": a} for s, a in zip(range(0, 60, 10), (0.2, 0.95, 0.5, 0.91, 0.93, 0.99), strict=True)}
    assert S.learned_rule(curve) == 30
    assert S.learned_rule({0: {"A_train": 0.95}, 10: {"A_train": 0.89}}) is None


def test_the_verdict_figure_draws_each_env_at_its_slope_and_interval() -> None:
    """One row per env in each metric's panel, the dot at the slope and the bar over the CI; a slope
    without an interval (a rung with one learned seed) is a dot without a bar; an env missing from a
    metric leaves its row empty."""
    rows = {"gap_test": [{"env": "B-v0", "slope": 0.11, "lo": 0.03, "hi": 0.2, "verdict": "inconclusive, CI > 0",
                          "seeds": "4,5"},
                         {"env": "A-v0", "slope": -0.02, "lo": math.nan, "hi": math.nan, "verdict": "inconclusive",
                          "seeds": "1,5"}],
            "A_test": [{"env": "A-v0", "slope": 0.3, "lo": 0.2, "hi": 0.4, "verdict": "grows", "seeds": "3,3"}]}
    gap, a = S.verdict_figure(rows).axes
    assert [t.get_text() for t in gap.get_yticklabels()] == ["A", "B"]
    drawn = sorted((tuple(line.get_xdata()), tuple(line.get_ydata())) for line in gap.lines[1:])
    assert drawn == [((-0.02,), (0,)), ((0.03, 0.2), (1, 1)), ((0.11,), (1,))]
    assert [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in a.lines[1:]] == [((0.2, 0.4), (0, 0)),
                                                                                          ((0.3,), (0,))]
    assert a.get_xlim()[1] == pytest.approx(1.15 * 0.4)  # symmetric, reaching past the widest interval


def seed_with_gaps(gaps: dict[int, float]) -> S.Seed:
    """A finished seed whose live test gap at each step is ``gaps[step]`` (C 0.9, A 0.9 - gap)."""
    curve = {t: {"C_test": 0.9, "A_test": 0.9 - g, "A_train": 1.0} for t, g in gaps.items()}
    return S.Seed(ENVS[0], {}, "tiny", 2, 8000, 0, True, 300, 400, {}, curve)


def test_the_gap_opens_at_the_first_evaluation_that_reaches_the_threshold_or_never() -> None:
    assert S.gap_opens(seed_with_gaps({300: 0.6, 0: 0.1, 100: 0.3, 200: 0.5}), 0.45) == 200  # in step order
    assert S.gap_opens(seed_with_gaps({0: 0.1, 100: 0.44}), 0.45) is None  # never reached: censored
    row = {"n_learned": 3, "n_gap_opened": 2, "gap_opens": 150e3, "gap_opens_lo": 100e3, "gap_opens_hi": 200e3}
    assert S._opens(row) == "150k [100k, 200k] (2/3)"
    assert S._opens(row | {"n_gap_opened": 0}) == "never" and S._opens(row | {"n_learned": 0}) == "-"
