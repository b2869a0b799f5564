"""Training to competence (``--until-learned``): the stop rule on sequences of train A, a run that
learns and stops, one that runs to its cap, resuming (a lone run stops where an uninterrupted one
does), seed groups whose seeds stop apart, and the flags reaching sweeps and the certificate."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import configs
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capgap import rundir
from capgap.eval.metrics import LEARNED, stop_step
from capgap.train import logs
from capgap.train.cli import main
from capgap.train.ppo import Args, train, train_seeds

LEARNS = configs.LEARNS
CAP = LEARNS["total_steps"]
DONE_KEYS = ("until_learned", "learned", "learned_at", "stopped_at")


def train_a(run_dir: Path) -> dict[int, float]:
    return {ln["step"]: ln["A"] for ln in rundir.read_evals(run_dir) if ln["split"] == "train"}


def tb_steps(run_dir: Path, tag: str) -> list[int]:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return [e.step for e in ea.Scalars(tag)]


# ----- the rule ------------------------------------------------------------------------


def test_the_stop_rule() -> None:
    # two consecutive evaluations >= LEARNED (LEARNED itself counts); learned_at is the first of them
    assert stop_step({0: 0.5, 10: LEARNED, 20: LEARNED, 30: 0.95}, 0) == (10, 20)
    assert stop_step({0: 0.5, 10: LEARNED, 20: LEARNED, 30: 0.95}, 1) == (10, 30)
    assert stop_step({0: 0.5, 10: LEARNED, 20: LEARNED, 30: 0.95}, 2) == (10, None)  # margin not trained yet
    # the margin is counted in evaluations, and a dip after competence does not undo it
    assert stop_step([(0, 0.1), (10, 0.95), (20, 1.0), (30, 0.2), (40, 0.3)], 2) == (10, 40)
    # the first pair wins; the order of the input does not matter
    assert stop_step([(30, 1.0), (0, 0.1), (20, 0.99), (10, 0.95)], 0) == (10, 20)
    # never two in a row, never passing, too few evaluations: never learned, never stopped
    assert stop_step({0: 0.1, 10: 0.95, 20: 0.89, 30: 0.99, 40: 0.5}, 0) == (None, None)
    assert stop_step({s: 0.899 for s in range(0, 100, 10)}, 0) == (None, None)
    assert stop_step({0: 1.0}, 0) == (None, None)
    assert stop_step({}, 0) == (None, None)
    # the step-0 evaluation counts as one (it will not pass in practice, but the rule is the rule)
    assert stop_step({0: 0.95, 10: 0.95}, 0) == (0, 10)


# ----- real runs: one that learns, one that cannot ---------------------------------------


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(Args(**LEARNS, until_learned=True, out=str(tmp_path_factory.mktemp("until"))))


def test_a_run_that_learns_stops_after_its_margin(learned_run: Path, tmp_path: Path) -> None:
    done = rundir.read_done(learned_run)
    curve = train_a(learned_run)
    learned_at, stop_at = stop_step(curve, 2)
    assert done["until_learned"] and done["learned"], (done, curve)
    assert done["learned_at"] == learned_at and curve[learned_at] >= LEARNED
    assert done["stopped_at"] == done["global_step"] == stop_at < CAP
    steps = sorted(curve)
    assert steps[-1] == stop_at and steps.index(stop_at) == steps.index(learned_at) + 1 + 2  # crossing, then 2 more
    assert rundir.checkpoint_step(rundir.latest_checkpoint(learned_run)) == stop_at
    assert max(tb_steps(learned_run, "losses/value_loss")) == stop_at
    assert done["A_train"] == curve[stop_at], "done.json holds the final evaluation"
    # the rule changes nothing before the stop: the same run to its cap has the very same curve up to
    # there (the LR schedule is the cap's), and records the same steps to learn without stopping
    fixed = train(Args(**LEARNS, out=str(tmp_path)))
    full = rundir.read_done(fixed)
    assert {k: full[k] for k in DONE_KEYS} == {"until_learned": False, "learned": True, "learned_at": learned_at,
                                               "stopped_at": CAP}
    assert full["global_step"] == CAP
    assert [ln for ln in rundir.read_evals(fixed) if ln["step"] <= stop_at] == rundir.read_evals(learned_run)


def test_a_run_that_cannot_learn_runs_to_its_cap(tmp_path: Path) -> None:
    run = train(Args(**configs.SMALL, until_learned=True, after_learned=0, out=str(tmp_path)))
    done = rundir.read_done(run)
    assert {k: done[k] for k in DONE_KEYS} == {"until_learned": True, "learned": False, "learned_at": None,
                                               "stopped_at": configs.SMALL["total_steps"]}
    assert sorted(train_a(run)) == [0, 4096, 8192, 12288]


def test_done_json_states_steps_to_learn_without_the_flag(tmp_path: Path) -> None:
    run = train(Args(**configs.SMALL, out=str(tmp_path)))
    done = rundir.read_done(run)
    learned_at, _ = stop_step(train_a(run), 2)
    assert {k: done[k] for k in DONE_KEYS} == {"until_learned": False, "learned": learned_at is not None,
                                               "learned_at": learned_at, "stopped_at": 12288}


# ----- resume ------------------------------------------------------------------------------


def test_a_killed_run_stops_where_an_uninterrupted_one_does(learned_run: Path, tmp_path: Path,
                                                           kill_and_rerun) -> None:
    cmd = [sys.executable, "-m", "capgap.train.cli", "train", "--out", str(tmp_path), *configs.flags(LEARNS),
           "--until-learned"]
    run_dir = tmp_path / learned_run.name
    straight = rundir.read_done(learned_run)
    crossing = straight["learned_at"] + LEARNS["eval_every"]
    assert crossing < straight["stopped_at"]
    kill_and_rerun(cmd, run_dir, crossing)  # killed at the crossing: the resumed run must know it learned
    resumed = rundir.read_done(run_dir)
    assert {k: resumed[k] for k in DONE_KEYS} == {k: straight[k] for k in DONE_KEYS}
    assert rundir.read_evals(run_dir) == rundir.read_evals(learned_run)  # every evaluation, the final one too
    assert tb_steps(run_dir, "losses/value_loss") == tb_steps(learned_run, "losses/value_loss")


def test_killed_between_the_stop_checkpoint_and_done_json(learned_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The rule's progress is read back from evals.jsonl: a run whose last checkpoint is its stop step
    finishes there at once, training nothing more."""
    copy = tmp_path / learned_run.name
    shutil.copytree(learned_run, copy)
    (copy / "done.json").unlink()
    ckpts = rundir.checkpoints(copy)
    train(Args(**LEARNS, until_learned=True, out=str(tmp_path)))
    assert f"resuming from step {rundir.read_done(learned_run)['stopped_at']:,}" in capsys.readouterr().out
    again = rundir.read_done(copy)
    assert {k: again[k] for k in (*DONE_KEYS, "C_test", "A_test", "A_train")} == {
        k: rundir.read_done(learned_run)[k] for k in (*DONE_KEYS, "C_test", "A_test", "A_train")}
    assert rundir.checkpoints(copy) == ckpts and rundir.read_evals(copy) == rundir.read_evals(learned_run)


# ----- seed groups: each seed stops on its own ---------------------------------------------

GROUP = {**configs.QUICK, "total_steps": 32 * 16 * 8, "eval_every": 32 * 16}  # evaluations at 0, 512, ..., 4096
LEARNS_FROM = {0: 512, 1: 1536, 2: None}
"""The scripted train A of each seed: 1.0 from this step on (None: never), 0.5 before."""


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations that report the scripted train A (and log it as a real one would): which seed stops
    where is then known in advance, while the training itself is real."""

    def evaluate(agent, args, dials, writer, run_dir, step, meta, channels) -> dict[str, float]:
        start = LEARNS_FROM[args.seed]
        a = 1.0 if start is not None and step >= start else 0.5
        for split in ("train", "test"):
            rundir.append_line(run_dir / "evals.jsonl", {"step": step, "split": split, "C": a, "A": a})
            writer.add_scalar(f"eval/{split}/A", a, step)
        return {"C_train": a, "A_train": a, "C_test": a, "A_test": a}

    monkeypatch.setattr(logs, "evaluate_and_log", evaluate)


def group(out: Path, **kw: Any) -> list[Path]:
    return train_seeds([Args(**GROUP, seed=s, out=str(out), **kw) for s in LEARNS_FROM])


def params(run_dir: Path) -> torch.Tensor:
    agent, _ = rundir.load_agent(run_dir)
    return torch.cat([p.detach().flatten() for p in agent.parameters()])


STOPS = {0: (512, 1536), 1: (1536, 2560), 2: (None, 4096)}
"""(learned_at, stopped_at) of each seed with --after-learned 1."""


@pytest.mark.usefixtures("scripted")
def test_the_seeds_of_a_group_stop_apart(tmp_path: Path) -> None:
    runs = group(tmp_path / "until", until_learned=True, after_learned=1)
    for seed, run in zip(LEARNS_FROM, runs, strict=True):
        learned_at, stop = STOPS[seed]
        done = rundir.read_done(run)
        assert (done["learned_at"], done["stopped_at"], done["global_step"]) == (learned_at, stop, stop), seed
        assert done["learned"] is (learned_at is not None) and done["group_seeds"] == 3
        # nothing of a stopped seed is logged, evaluated or checkpointed after its stop
        assert max(ln["step"] for ln in rundir.read_evals(run)) == stop
        assert rundir.checkpoint_step(rundir.latest_checkpoint(run)) == stop
        assert max(tb_steps(run, "losses/value_loss")) == stop and max(tb_steps(run, "eval/train/A")) == stop
    # a stopped seed is still computed in the batch, and the others' computation is what it was
    plain = group(tmp_path / "plain")
    assert torch.equal(params(plain[2]), params(runs[2]))
    assert [rundir.read_done(r)["stopped_at"] for r in plain] == [4096] * 3


@pytest.mark.usefixtures("scripted")
def test_a_killed_group_resumes_without_its_stopped_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed after seed 0 stopped and the others' checkpoint at 2048: seed 0 is finished and skipped; the
    others resume from 2048, recompute the rule from their evaluations, and stop where they did."""
    straight = group(tmp_path / "straight", until_learned=True, after_learned=1)
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")
    for s in straight[1:]:
        run = tmp_path / "killed" / s.name
        (run / "done.json").unlink()
        for ckpt in rundir.checkpoints(run):
            if rundir.checkpoint_step(ckpt) > 2048:
                ckpt.unlink()
    first = (tmp_path / "killed" / straight[0].name / "done.json").read_text()
    capsys.readouterr()
    group(tmp_path / "killed", until_learned=True, after_learned=1)
    out = capsys.readouterr().out
    assert f"{straight[0].name} already finished" in out and "2 seeds of" in out and "resuming from step 2,048" in out
    assert (tmp_path / "killed" / straight[0].name / "done.json").read_text() == first
    for seed, s in zip(LEARNS_FROM, straight, strict=True):
        run = tmp_path / "killed" / s.name
        done = rundir.read_done(run)
        assert (done["learned_at"], done["stopped_at"]) == STOPS[seed], seed
        assert [ln["step"] for ln in rundir.read_evals(run)] == [ln["step"] for ln in rundir.read_evals(s)]


# ----- the flags: bad values, sweeps, the certificate ----------------------------------------


def test_after_learned_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path), "--no-progress", "--until-learned", "--after-learned", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capgap: error: --after-learned -1: ") and "\n" not in err, err
    assert not list(tmp_path.iterdir())


def test_sweeps_and_the_certificate_pass_the_flags_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from capgap.train import certificate, sweep

    seen: dict[str, Any] = {}
    monkeypatch.setattr(sweep, "run_sweep", lambda s, *a, **kw: seen.setdefault("sweep", s))
    assert main(["sweep", "--rungs", "nano,tiny", "--seeds", "0..1", "--out", str(tmp_path / "sw"), "--until-learned",
                 "--after-learned", "1", "--total-steps", "4096"]) == 0
    trials = seen["sweep"].trials()
    assert len(trials) == 4 and all(t.until_learned and t.after_learned == 1 for t in trials)
    assert seen["sweep"].config()["train"]["until_learned"] is True  # a sweep without it is another sweep
    est = sweep.estimate([seen["sweep"]], workers=2)
    assert est["jobs"] == 2 and est["core_s"] == pytest.approx(sum(sweep._cost(j) for j in sweep.plan(trials)))

    def certify(envs, rungs, seeds, out, base, *a, **kw):
        seen["certify"] = base
        (out / "certificate.md").parent.mkdir(parents=True, exist_ok=True)
        (out / "certificate.md").write_text("")
        return []

    monkeypatch.setattr(certificate, "run", certify)
    assert main(["certify", "--learned", "--out", str(tmp_path / "cert"), "--until-learned"]) == 0
    assert seen["certify"].until_learned and seen["certify"].after_learned == 2


def test_an_older_run_or_sweep_without_the_fields_resumes(tmp_path: Path) -> None:
    """Configs written before the competence rule existed lack its fields: they meant the defaults."""
    run = train(Args(**configs.QUICK, out=str(tmp_path)))
    config = json.loads((run / "config.json").read_text())
    for k in ("until_learned", "after_learned"):
        del config[k]
    (run / "config.json").write_text(json.dumps(config))
    rundir.check_run_dir(run, {**config, "until_learned": False, "after_learned": 2})
    with pytest.raises(rundir.RunError, match="differs in: until_learned"):
        rundir.check_run_dir(run, {**config, "until_learned": True, "after_learned": 2})
