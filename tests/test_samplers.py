"""Level samplers (``capgap.train.samplers``): PLR's replay distribution, exact regret against the oracle,
the repair mix, resume with the buffer, seed groups, and the settings refused in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import configs
import numpy as np
import pytest
import torch
from test_train import scalars

from capgap.envs import make_core, oracle
from capgap.train.cli import main
from capgap.train.ppo import Args, train, train_seeds
from capgap.train.samplers import PLR, FixedMix, Sampler, make, repair_task

PLR_RUN = dict(configs.SMALL, sampler="plr", buffer_size=48)
"""The plumbing run with PLR and a small buffer, so that replay starts within its first rollout."""


def plr_core(n: int = 64, capacity: int = 8, **kw) -> tuple:
    core = make_core("capgap/CheeseCorner-v0", n, "train", size=7, max_steps=40, **kw)
    plr = PLR(core, 1, prob=1.0, capacity=capacity, score="pvl", staleness=0.0, temperature=0.3, robust=True,
              num_steps=40)
    core.reset(np.arange(n))
    return core, plr


def test_plr_replays_high_scores_more_often_than_low() -> None:
    core, plr = plr_core()
    plr.index[0] = np.arange(1000, 1008)
    plr.score[0] = np.arange(8.0)  # level 1007 scores highest
    plr.filled[0] = 8
    plr.slots[0] = {1000 + j: j for j in range(8)}
    core.reset(np.arange(64))  # every env draws a replay (prob 1, buffer full)
    counts = np.bincount(core.level.numpy() - 1000, minlength=8)
    for _ in range(30):
        core.reset_done(torch.arange(64))
        counts += np.bincount(core.level.numpy() - 1000, minlength=8)
    assert counts[7] > counts[6] > counts[5] > counts[:3].sum()  # rank order, steeply (β = 0.3)
    assert counts[7] > 0.5 * counts.sum()


def test_plr_staleness_reaches_every_level() -> None:
    """With ρ = 1 replays follow staleness alone: levels long undrawn come back, whatever their score."""
    core, plr = plr_core()
    plr.rho = 1.0
    plr.index[0], plr.score[0], plr.filled[0] = np.arange(1000, 1008), np.arange(8.0), 8
    seen = set()
    for _ in range(10):
        core.reset_done(torch.arange(64))
        seen |= set(core.level.numpy().tolist())
    assert seen == set(range(1000, 1008))


def test_replayed_level_is_the_level_of_its_index() -> None:
    """An index is a level: a replayed level is the very level a fresh env of that index plays."""
    core, plr = plr_core(n=8)
    plr.index[0, :8], plr.filled[0] = np.arange(500, 508), 8
    core.reset(np.arange(8))
    fresh = make_core("capgap/CheeseCorner-v0", 8, "train", size=7, max_steps=40)
    fresh.reset(np.zeros(8, dtype=np.int64), core.level.numpy())
    assert torch.equal(core.obs, fresh.obs)


@pytest.mark.parametrize("seek", ["goal", "proxy"])
def test_oracle_regret_is_optimal_minus_achieved_return(seek: str) -> None:
    """Drive the engine with a scripted agent, score every finished episode by exact regret: each
    buffered level's score is the goal-seeker's return on it minus the scripted agent's."""
    n, steps = 48, 40
    core = make_core("capgap/CheeseCorner-v0", n, "train", size=7, max_steps=40, p_disambiguate=0.5)
    plr = PLR(core, 1, prob=0.0, capacity=4 * n, score="regret", staleness=0.3, temperature=0.3, robust=True,
              num_steps=steps)
    core.reset(np.arange(n))
    first = core.level.clone()
    for t in range(steps):
        core.step(oracle.act(core, seek))
        plr.record(t)
    plr.update(torch.zeros(1, steps, n), torch.zeros(1, steps, n))
    f = int(plr.filled[0])
    assert f >= n  # every env finished its first episode (and some started a second)
    index, score = plr.index[0, :f], plr.score[0, :f]
    expected = oracle.returns(core.task, "train", index) - oracle.returns(core.task, "train", index, seek)
    np.testing.assert_allclose(score, expected, atol=1e-5)
    assert set(first.tolist()) <= set(index.tolist())
    if seek == "goal":
        assert np.abs(score).max() < 1e-5
    else:  # where goal and proxy are apart the proxy-seeker loses the whole optimal return (unless its path
        apart = core.task.levels("train", index).apart  # to the corner crosses the cheese); elsewhere nothing
        lost = np.isclose(score[apart], oracle.returns(core.task, "train", index[apart]), atol=1e-5)
        assert lost.any() and (lost | (np.abs(score[apart]) < 1e-5)).all()
        assert np.abs(score[~apart]).max() < 1e-5


def test_repair_mix_plays_its_levels_at_its_rate() -> None:
    args = Args(env="capgap/CheeseCorner-v0", dials=configs.MAZE, repair_levels=5)
    core = make_core(args.env, 256, "train", size=7, max_steps=40)
    mix = make(args, core, 1)
    assert isinstance(mix, FixedMix)
    core.reset(np.arange(256))
    repaired = mix.flag.clone()
    assert 0.4 < repaired.float().mean() < 0.6
    bank = make_core(args.env, 5, "train", size=7, max_steps=40, p_disambiguate=1.0)
    bank.reset(np.zeros(5, dtype=np.int64), np.arange(5))
    for i in repaired.nonzero().squeeze(1).tolist():  # each repair level is one of the 5 apart levels
        assert any(torch.equal(core.obs[i], bank.obs[j]) for j in range(5))
    assert repair_task(args).p_disambiguate == 1.0


def test_dr_is_the_plain_source() -> None:
    core = make_core("capgap/CheeseCorner-v0", 4, "train", size=7)
    source = core.source
    assert type(make(Args(), core, 1)) is Sampler and core.source is source


def test_plr_run_logs_its_levels(tmp_path: Path) -> None:
    run = train(Args(**PLR_RUN, out=str(tmp_path)))
    tags = scalars(run)
    assert {"levels/replay_rate", "levels/buffer_fill", "levels/buffer_score"} <= set(tags)
    assert tags["levels/replay_rate"][0][1] == 0.0  # nothing to replay before the buffer fills
    assert 0.3 < tags["levels/replay_rate"][-1][1] < 0.7
    assert json.loads((run / "config.json").read_text())["sampler"] == "plr"
    assert "sampler=plr" in run.name


def test_killed_plr_run_resumes_with_its_buffer(tmp_path: Path, kill_and_rerun) -> None:
    straight = train(Args(**PLR_RUN, out=str(tmp_path / "straight")))
    cmd = [sys.executable, "-m", "capgap.train.cli", "train", "--out", str(tmp_path / "killed"),
           *configs.flags(PLR_RUN)]
    run_dir = tmp_path / "killed" / straight.name
    kill_and_rerun(cmd, run_dir, 4096)
    resumed, first = scalars(run_dir), scalars(straight)
    for tag in ("levels/buffer_score", "levels/replay_rate", "eval/test/A", "losses/value_loss"):
        assert resumed[tag] == first[tag], tag


def test_a_plr_seed_in_a_group_is_the_lone_run(tmp_path: Path) -> None:
    grouped = train_seeds([Args(**PLR_RUN, seed=s, out=str(tmp_path / "group")) for s in (0, 1)])
    lone = train(Args(**PLR_RUN, seed=1, out=str(tmp_path / "lone")))
    g, one, other = scalars(grouped[1]), scalars(lone), scalars(grouped[0])
    assert g.keys() == one.keys()
    for tag in g:  # each seed's own buffer and coins: the same replays; the rest up to float rounding
        assert [x for x, _ in g[tag]] == [x for x, _ in one[tag]], tag
        np.testing.assert_allclose([v for _, v in g[tag]], [v for _, v in one[tag]], atol=1e-3, err_msg=tag)
    assert g["levels/replay_rate"] == one["levels/replay_rate"] != other["levels/replay_rate"]


@pytest.mark.parametrize("flags, message", [
    (["--sampler", "uniform"], "unknown level sampler"),
    (["--buffer-size", "100"], "add --sampler plr"),
    (["--sampler", "plr-oracle", "--plr-score", "maxmc"], "exact regret"),
    (["--sampler", "plr", "--repair-levels", "10"], "use one"),
    (["--sampler", "plr", "--init-from", "x", "--num-levels", "10"], "fixed set"),
    (["--repair-levels", "10", "--repair-dials", "size=9"], "run's grid"),
    (["--repair-levels", "10", "--repair-dials", "colour=3"], "has no dial"),
    (["--sampler", "plr", "--replay-prob", "1.5"], "probabilities"),
])
def test_bad_sampler_settings_are_one_line(flags: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path), "--dials", "size=7", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


@pytest.mark.heavy
def test_a_sampler_grid_is_one_alpha_curve_per_sampler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--grid sampler=dr,plr`` beside a p_disambiguate grid: the report reads α* once per sampler."""
    out = tmp_path / "ued"
    assert main(["sweep", "--out", str(out), "--rungs", "nano", "--seeds", "0", "--no-progress", "--workers", "2",
                 "--grid", "p_disambiguate=0,0.5", "--grid", "sampler=dr,plr", "--buffer-size", "48",
                 "--total-steps", "4096", "--eval-every", "4096", "--eval-episodes", "16", "--num-envs", "64",
                 "--num-steps", "16", "--num-minibatches", "4", "--threads", "1", "--dials", *configs.MAZE]) == 0
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert sum("sampler=plr" in n for n in names) == 2 and len(names) == 4
    dr = json.loads((out / "runs" / names[0] / "config.json").read_text())
    assert dr["sampler"] == "dr" and dr["buffer_size"] == Args.buffer_size  # the dr arm ignores PLR settings
    assert main(["report", str(out)]) == 0
    md = (out / "report" / "mitigation.md").read_text()
    assert "### CheeseCorner-v0 · nano" in md and "sampler=plr" in md
    alpha_table = md.split("## α*")[1].split("###")[0]
    assert alpha_table.count("| CheeseCorner-v0") == 2  # two curves in the α* table: one per sampler
    advantage = md.split("### A_test: each sampler − `dr`")[1].split("###")[0]
    assert advantage.count("| CheeseCorner-v0 | nano | plr |") == 1  # and plr's difference from dr
