"""The `capgap` command's env subcommands: what a researcher adding an env runs first."""

from __future__ import annotations

import pytest

import capgap.envs as E
from capgap.train.cli import main


def test_envs_lists_every_registered_env_with_its_dials(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "--no-chance"]) == 0
    out = capsys.readouterr().out
    for env_id, cls in E.TASKS.items():
        assert env_id in out
        for dial in cls.dials():
            assert f"{dial}=" in out
    for cls in E.TASKS.values():  # each env's declared training budget
        assert f"budget: {cls.budget:,} env steps" in out
    assert "capgap/LavaShift-v0  (control)" in out


def test_envs_shows_what_chance_scores(capsys: pytest.CaptureFixture[str]) -> None:
    from capgap.eval import chance

    assert main(["envs", "capgap/KeysChests-v0", "--rung", "nano"]) == 0
    out = capsys.readouterr().out
    assert "capgap/CheeseCorner-v0" not in out
    refs = chance.references("capgap/KeysChests-v0", {})
    rand = refs.score("random", "test")
    line = next(x for x in out.splitlines() if "uniform random" in x)
    assert line.split()[2:] == [f"{rand['C']:.2f}", "/", f"{rand['A']:.2f}", "/", f"{rand['proxy']:.2f};",
                                f"{refs.score('random', 'train')['A']:.2f}"]
    assert "untrained nano (x3)" in out and "goal-seeker            1.00 / 1.00" in out and "proxy-seeker" in out
    assert main(["envs", "capgap/Nope-v0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown env" in err
    assert main(["envs", "capgap/KeysChests-v0", "--rung", "huge"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().count("\n") == 0 and "unknown rung 'huge'" in err  # before any listing


def test_show_prints_a_level(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "capgap/CheeseDish-v0", "--split", "test", "--seed", "3", "--dials", "size=9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("capgap/CheeseDish-v0 split=test level=")
    grid = out[1:]
    assert len(grid) == 9 and grid[0] == "#" * 18
    assert sum(row.count("@") for row in grid) == 1 and sum(row.count("d") for row in grid) == 1


def test_show_steps_shows_what_moves(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "capgap/FollowLeader-v0", "--split", "test", "--steps", "3"]) == 0
    frames = capsys.readouterr().out.split("\n\n")
    assert len(frames) == 4 and [f.split(":")[0] for f in frames[1:]] == ["step 1", "step 2", "step 3"]
    grids = ["\n".join(ln for ln in f.splitlines()[1:] if " = " not in ln) for f in frames]  # no title, legend
    assert grids[0].count(".") == 1 and grids[-1].count(".") >= 3, "the leader's trail grows"
    assert all(g.count("L") == 1 for g in grids)
    assert all(g.count("T") == 1 for g in grids), "the target is drawn, in sight or not"
    assert all(("T'" in g) == ("T' = target, not in the agent's view" in f) for g, f in zip(grids, frames, strict=True))
    assert main(["show", "capgap/MonsterShields-v0", "--steps", "2"]) == 0
    frames = capsys.readouterr().out.split("\n\n")
    assert len(frames) == 3 and all("\n".join(f.splitlines()[1:]).count("M") == 3 for f in frames)
    assert main(["show", "capgap/MonsterShields-v0", "--steps", "-1"]) == 2
    assert "--steps=-1 is out of range" in capsys.readouterr().err


def test_certify_prints_and_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certify", "capgap/LavaShift-v0", "--levels", "100"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 3 and "FAIL" not in out


def test_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "capgap sweep" in capsys.readouterr().out
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == "capgap: error: unknown command 'trian'; commands: " + ", ".join(
        ["envs", "show", "certify", "rungs", "train", "sweep", "eval", "report", "inspect", "scaling", "pack",
         "redteam", "monitor", "oversight"])


def test_one_base_class_for_user_errors() -> None:
    """Every error the CLI prints as one line derives from CapgapError, and only those are caught."""
    from capgap.rundir import RunError
    from capgap.train.cli import UsageError

    for cls in (E.DialError, RunError, UsageError):
        assert issubclass(cls, E.CapgapError), cls
    assert not issubclass(E.CapgapError, (ValueError, RuntimeError)), "a bug's ValueError must not print as one line"


def test_eval_in_this_process_keeps_its_thread_count(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """``capgap eval --workers 1`` evaluates in the calling process: with ``--threads`` (default 1) for
    the evaluation, and the caller's own thread count restored afterwards (no 2-thread trap left behind)."""
    import shutil

    import configs
    import torch

    from capgap.train.ppo import Args, train

    run = train(Args(**{**configs.QUICK, "total_steps": 32 * 16}, out=str(tmp_path)))
    shutil.rmtree(run / "episodes")  # training evaluated its checkpoints: make eval do it again
    torch.set_num_threads(2)
    try:
        assert main(["eval", str(run), "--episodes", "8", "--workers", "1"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert "1 runs, 2 checkpoints evaluated now" in capsys.readouterr().out
    assert main(["eval", str(run), "--threads", "0"]) == 2
    assert "--threads 0: give a thread count >= 1" in capsys.readouterr().err
