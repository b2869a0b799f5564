"""Mitigation studies: the threshold along an axis (α*, k*) and its CI, the sweep that fine-tunes
another sweep's runs (a repair sweep), and the report that recognises both."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from capgap.eval.mitigation import Point, axes, curves, markdown, plot_samplers, sampler_advantage, threshold
from capgap.train.cli import main

TRAIN = ["--total-steps", "8192", "--eval-every", "4096", "--eval-episodes", "16", "--num-envs", "64",
         "--num-steps", "16", "--num-minibatches", "4", "--threads", "1"]
DIALS = ["size=7", "max_steps=30"]


def curve(*retentions: list[float]) -> list[Point]:
    """Points at x = 0, 0.01, 0.1, ... with the given per-seed retentions."""
    xs = [0.0, 0.01, 0.1, 1.0, 10.0]
    return [Point(x, {s: {"retention": r} for s, r in enumerate(rs)}, 0) for x, rs in zip(xs, retentions,
                                                                                          strict=False)]


def test_threshold_is_the_first_point_whose_mean_clears_the_bar() -> None:
    t = threshold(curve([0.2, 0.3, 0.25], [0.5, 0.6, 0.55], [0.85, 0.9, 0.8], [0.95, 1.0, 0.9]))
    assert t[0] == 0.1 and t[1] <= 0.1 <= t[2]
    # seeds that agree leave no doubt: the CI is the point
    assert threshold(curve([0.1] * 3, [0.9] * 3, [0.9] * 3)) == (0.01, 0.01, 0.01)


def test_threshold_can_fail_and_says_so() -> None:
    """A curve that never retains the goal has no threshold: inf, not the largest value tried."""
    assert threshold(curve([0.2, 0.3], [0.4, 0.5], [0.7, 0.79])) == (math.inf, math.inf, math.inf)


def test_threshold_ci_widens_with_disagreeing_seeds() -> None:
    """One seed retaining the goal at 0.01 and two not: the point estimate says 0.1 (mean 0.43
    at 0.01), and the bootstrap CI reaches down to where the lucky seed alone would put it."""
    t = threshold(curve([0.1, 0.1, 0.1], [1.0, 0.2, 0.1], [0.9, 0.9, 0.9]))
    assert t == (0.1, 0.01, 0.1)


def records(p: float, seed: int, a_train: float, a_test: float, n: int = 20) -> list[dict]:
    """Episode records of one run along p_disambiguate with the given train and test A."""
    run = {"env": "E", "dials": f"p_disambiguate={p}", "setting": "", "rung": "nano", "rung_index": 0, "params": 1,
           "step": 100, "seed": seed}
    return [{**run, "split": split, "goal_score": float(i < a * n), "capability_score": 1.0, "outcome": "goal"}
            for split, a in (("train", a_train), ("test", a_test)) for i in range(n)]


def test_alpha_retention_divides_by_the_original_tasks_train_a() -> None:
    """A run's own train A falls as p rises (its levels are mixed): retention over it would call p = 0.5
    fixed (0.5 / 0.6 > 0.8); over the original task's train A (the p = 0 arm, 1.0) it is 0.5, not fixed."""
    recs = [r for seed in (0, 1) for p, a_train, a_test in ((0, 1.0, 0.2), (0.5, 0.6, 0.5))
            for r in records(p, seed, a_train, a_test)]
    (c,) = curves(recs, "p_disambiguate")
    assert c.reference == "train A of the p_disambiguate=0 arm"
    assert [p.ci("retention")[0] for p in c.points] == pytest.approx([0.2, 0.5])
    assert threshold(c.points)[0] == math.inf
    (c,) = curves([r for r in recs if r["dials"] != "p_disambiguate=0"] + records(0.1, 0, 0.6, 0.5)
                  + records(0.1, 1, 0.6, 0.5), "p_disambiguate")  # no p = 0 arm: its own train A, and it says so
    assert c.reference == "own train A" and c.points[-1].ci("retention")[0] == pytest.approx(0.5 / 0.6)


def test_every_sampler_is_measured_against_the_dr_arms_original_task() -> None:
    """A curriculum that learns the original task less well (train A 0.5 at p = 0) would read 'fixed' at
    p = 0.1 over its own train A (0.6 / 0.5 > 0.8); against the dr arm's (1.0) it retains 0.6, not fixed."""
    recs = [r for seed in (0, 1) for p, a_train, a_test in ((0, 1.0, 0.2), (0.1, 0.9, 0.5))
            for r in records(p, seed, a_train, a_test)]
    plr = [{**r, "setting": "sampler=plr"} for seed in (0, 1) for p, a_train, a_test in ((0, 0.5, 0.3), (0.1, 0.5, 0.6))
           for r in records(p, seed, a_train, a_test)]
    dr_curve, plr_curve = curves(recs + plr, "p_disambiguate")
    assert dr_curve.reference == "train A of the p_disambiguate=0 arm"
    assert plr_curve.reference == "train A of the dr sampler's p_disambiguate=0 arm"
    assert [p.ci("retention")[0] for p in plr_curve.points] == pytest.approx([0.3, 0.6])
    assert threshold(plr_curve.points)[0] == math.inf
    (alone,) = curves(plr, "p_disambiguate")  # no dr arm in the sweep: its own p = 0 arm, and it says so
    assert alone.reference == "train A of the p_disambiguate=0 arm" and threshold(alone.points)[0] == 0.1


def test_runs_trained_to_competence_show_how_many_learned_and_when(tmp_path: Path) -> None:
    """With ``done.json`` of runs trained to competence, each point says how many seeds learned and their
    steps to learn; a sampler sweep gets its side-by-side figure."""
    recs = []
    for setting in ("", "sampler=plr-oracle"):
        for seed in (0, 1):
            for p in (0, 0.1):
                recs += [{**r, "setting": setting, "run": f"{setting}p{p}s{seed}"} for r in records(p, seed, 1.0, 0.5)]
    done = {f"{setting}p{p}s{seed}": {"until_learned": True, "learned": not (setting and seed),
                                      "learned_at": None if setting and seed else 100_000 * (seed + 1)}
            for setting in ("", "sampler=plr-oracle") for seed in (0, 1) for p in (0, 0.1)}
    dr, plr = curves(recs, "p_disambiguate", done)
    assert dr.points[0].learning() == (2, 2, pytest.approx((150_000, 0, 785_310), abs=1))  # cut at 0
    assert plr.points[1].learning()[:2] == (1, 2)
    md = markdown([dr, plr])
    assert "| learned | steps to learn |" in md and "150k [" in md and "100k (1 seed)" in md
    assert "steps to learn" not in markdown(curves(recs, "p_disambiguate"))  # a fixed budget: no such columns
    assert plot_samplers([dr, plr]) is not None and plot_samplers([dr]) is None
    asked = []
    fig = plot_samplers([dr, plr], lambda env, dials: asked.append((env, dials)) or 0.3)
    assert asked == [("E", {"p_disambiguate": 0})]  # chance on the panel's own dials
    assert any(list(line.get_ydata()) == [0.3, 0.3] for line in fig.axes[0].lines)


def test_a_point_holds_every_seed_where_it_stopped() -> None:
    """Seeds trained to competence stop at different steps: seed 1 stops at 100, seed 0 goes on to 300.
    The point holds both at their own final evaluation, not seed 0 alone at the largest step."""
    def at(step: int, recs: list[dict]) -> list[dict]:
        return [{**r, "step": step} for r in recs]
    recs = [r for p in (0, 0.1) for r in records(p, 1, 1.0, 0.6)]  # seed 1: one evaluation, step 100
    for p in (0, 0.1):
        recs += at(100, records(p, 0, 0.5, 0.0)) + at(300, records(p, 0, 1.0, 0.2))
    (c,) = curves(recs, "p_disambiguate")
    assert [sorted(pt.seeds) for pt in c.points] == [[0, 1], [0, 1]]
    assert c.points[1].step == 300
    assert c.points[1].ci("A_test")[0] == pytest.approx((0.6 + 0.2) / 2)


def test_axes_are_the_numeric_settings_that_vary() -> None:
    groups = [("E", "p_disambiguate=0,size=7", "", "nano"), ("E", "p_disambiguate=0.1,size=7", "", "nano"),
              ("E", "p_disambiguate=1,size=7", "init_from=E__nano__p=0,num_levels=4", "nano"),
              ("E", "p_disambiguate=1,size=7", "init_from=E__nano__p=0,num_levels=16", "nano")]
    assert axes(groups) == ["num_levels", "p_disambiguate"]
    assert axes(groups[:1]) == []


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dial sweep: nano, 2 seeds, p_disambiguate 0 and 1 (the source of the repair sweep below)."""
    out = tmp_path_factory.mktemp("mit") / "alpha"
    assert main(["sweep", "--out", str(out), "--rungs", "nano", "--seeds", "0..1", "--no-progress", "--workers", "2",
                 "--grid", "p_disambiguate=0,1", *TRAIN, "--dials", *DIALS]) == 0
    return out


@pytest.fixture(scope="module")
def repair(source: Path) -> Path:
    out = source.parent / "repair"
    assert main(["sweep", "--out", str(out), "--rungs", "nano", "--seeds", "0..1", "--no-progress", "--workers", "2",
                 "--init-from", str(source), "--init-where", "p_disambiguate=0", "--grid", "num_levels=1,4",
                 *TRAIN, "--dials", *DIALS, "p_disambiguate=1"]) == 0
    return out


@pytest.mark.heavy
def test_a_repair_sweep_fine_tunes_the_matching_runs(source: Path, repair: Path) -> None:
    runs = sorted(p.name for p in (repair / "runs").iterdir())
    assert runs == [f"CheeseCorner-v0__nano__max_steps=30__p_disambiguate=1__size=7__levels={k}__from="
                    f"CheeseCorner-v0__nano__max_steps=30__p_disambiguate=0__size=7__s{s}__s{s}"
                    for k in (1, 4) for s in (0, 1)]
    import json

    rec = json.loads((repair / "runs" / runs[0] / "episodes" / f"step_{0:010d}.jsonl").read_text().splitlines()[0])
    assert rec["setting"] == "init_from=CheeseCorner-v0__nano__max_steps=30__p_disambiguate=0__size=7,num_levels=1"


@pytest.mark.heavy
def test_a_repairs_retention_is_against_train_a_before_it(repair: Path) -> None:
    """Train A after a repair can collapse; retention divides by train A of the source network."""
    from capgap.eval.evaluator import episode_files
    from capgap.eval.metrics import load_episodes
    from capgap.eval.mitigation import curves

    (curve,) = curves(load_episodes(episode_files(repair)), "num_levels")
    assert curve.repair and curve.before is not None and [p.x for p in curve.points] == [1, 4]
    for p in curve.points:
        for seed, m in p.seeds.items():
            assert m["retention"] == pytest.approx(m["A_test"] / curve.before.seeds[seed]["A_train"])


@pytest.mark.heavy
def test_the_mixed_repair_recipe_keeps_the_task_in_view(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default repair: k disambiguating levels mixed into the original distribution. Its runs are an
    arm of their own (named, and set apart in the records), and the report reads k* along repair_levels."""
    from capgap.eval.evaluator import episode_files
    from capgap.eval.metrics import load_episodes

    out = source.parent / "mixed"
    assert main(["sweep", "--out", str(out), "--rungs", "nano", "--seeds", "0..1", "--no-progress", "--workers", "2",
                 "--init-from", str(source), "--init-where", "p_disambiguate=0", "--grid", "repair_levels=1,4",
                 *TRAIN, "--dials", *DIALS, "p_disambiguate=0"]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs[0] == ("CheeseCorner-v0__nano__max_steps=30__p_disambiguate=0__size=7__repair=1__from="
                       "CheeseCorner-v0__nano__max_steps=30__p_disambiguate=0__size=7__s0__s0")
    (curve,) = curves(load_episodes(episode_files(out)), "repair_levels")
    assert curve.repair and curve.before is not None and "repair_levels" not in curve.rest
    assert main(["report", str(out)]) == 0
    assert "## k*: the smallest repair_levels with goal retention" in (out / "report" / "mitigation.md").read_text()


@pytest.mark.heavy
def test_a_repair_sweep_refuses_an_ambiguous_source(source: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--out", str(tmp_path / "r"), "--rungs", "nano", "--seeds", "0", "--no-progress",
                 "--init-from", str(source), "--grid", "num_levels=1,4", *TRAIN, "--dials", *DIALS]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 runs of CheeseCorner-v0 nano (conv) seed 0 match" in err and "--init-where" in err and "\n" not in err
    assert main(["sweep", "--out", str(tmp_path / "r"), "--rungs", "micro", "--seeds", "0", "--no-progress",
                 "--init-from", str(source), "--init-where", "p_disambiguate=0", "--grid", "num_levels=1,4",
                 *TRAIN, "--dials", *DIALS]) == 2
    assert "no run of CheeseCorner-v0 micro (conv) seed 0 with p_disambiguate=0" in capsys.readouterr().err


@pytest.mark.heavy
def test_the_report_recognises_dial_and_repair_sweeps(source: Path, repair: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(source)]) == 0
    out = capsys.readouterr().out
    assert "## α*: the smallest p_disambiguate with goal retention" in out
    assert (source / "report" / "mitigation.png").stat().st_size > 0
    assert (source / "report" / "thresholds.png").stat().st_size > 0
    assert main(["report", str(repair)]) == 0
    md = (repair / "report" / "mitigation.md").read_text()
    assert "## k*: the smallest num_levels with goal retention" in md
    assert "repair / scratch" in md and "| before | 2 |" in md
    # ...and TensorBoard shows the study's plots beside the report's (read back from the event files)
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(repair / "report" / "tensorboard"))
    mux.Reload()
    images = {tag for run in mux.Runs().values() for tag in run.get("images", [])}
    assert {"plots/mitigation", "plots/thresholds", "plots/curves"} <= images
    # several sweeps are reported together: both studies in one report
    assert main(["report", str(source), str(repair), "--out", str(source.parent / "both")]) == 0
    both = (source.parent / "both" / "mitigation.md").read_text()
    assert "## α*" in both and "## k*" in both
    # a plain sweep is no study
    plain = source.parent / "plain"
    assert main(["sweep", "--out", str(plain), "--rungs", "nano", "--seeds", "0", "--no-progress",
                 *TRAIN, "--dials", *DIALS]) == 0
    capsys.readouterr()
    assert main(["report", str(plain)]) == 0
    assert "Mitigation" not in capsys.readouterr().out and not (plain / "report" / "mitigation.md").exists()


def test_the_report_gives_each_samplers_advantage_over_dr_with_its_interval() -> None:
    """plr-oracle's test A is 0.3 over dr's at p = 0.1 and equal at p = 0; the table says so, with an
    interval that excludes 0 only where the arms differ; without a dr arm there is no table."""
    def arm(setting: str, a_at: dict[float, float]) -> list[dict]:
        return [{**r, "setting": setting} for seed in (0, 1, 2) for p, a in a_at.items()
                for r in records(p, seed, 1.0, a + 0.05 * seed)]

    dr, plr = arm("", {0: 0.2, 0.1: 0.3}), arm("sampler=plr-oracle", {0: 0.2, 0.1: 0.6})
    lines = sampler_advantage(curves(dr + plr, "p_disambiguate"))
    assert lines[0].startswith("### A_test: each sampler − `dr` at the same p_disambiguate")
    (row,) = [line for line in lines if "plr-oracle" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["E", "nano", "plr-oracle"]
    (d0, lo0, hi0), (d1, lo1, _) = (map(float, c.replace("[", "").replace("]", "").replace(",", " ").split())
                                      for c in cells[3:5])
    assert d0 == pytest.approx(0) and lo0 < 0 < hi0  # equal arms: the interval holds 0
    assert d1 == pytest.approx(0.3) and lo1 > 0  # plr-oracle ahead: it excludes 0
    assert sampler_advantage(curves(plr, "p_disambiguate")) == []
    noisy = arm("sampler=plr-oracle", {0: 0.2, 0.1: 0.6})
    noisy = [{**r, "goal_score": float(r["seed"] == 1 and r["split"] == "test")} if r["dials"] == "p_disambiguate=0"
             else r for r in noisy]
    (row,) = [line for line in sampler_advantage(curves(dr + noisy, "p_disambiguate")) if "plr-oracle" in line]
    lo, hi = map(float, row.split("|")[4].split("[")[1].rstrip("] ").split(","))
    assert lo < 0 < hi  # disagreeing seeds at p = 0: an interval around the difference, holding 0 here
