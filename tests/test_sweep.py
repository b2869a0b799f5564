"""Sweeps end to end: trials, resuming a killed sweep, the Ray backend, the evaluator, bad input."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capgap.train.cli import main
from capgap.train.sweep import Sweep

TRAIN = ["--total-steps", "8192", "--eval-every", "4096", "--eval-episodes", "16", "--num-envs", "64",
         "--num-steps", "16", "--num-minibatches", "4", "--dials", "size=7", "max_steps=30"]


def sweep_cmd(out: Path, *extra: str) -> list[str]:
    return ["sweep", "--rungs", "0..1", "--seeds", "0..1", "--out", str(out), "--no-progress", *extra, *TRAIN]


def finished(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in (out / "runs").glob("*/done.json")}


@pytest.mark.heavy
def test_sweep_eval_and_resume_after_kill(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "capgap.train.cli", *sweep_cmd(out, "--workers", "1", "--threads", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not finished(out):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = finished(out)
    assert 1 <= len(before) < 4, "killed too late (or never started) to test resuming"
    for run in before:  # --threads 1, not the cores shared out among one worker
        assert json.loads((out / "runs" / run / "config.json").read_text())["threads"] == 1, run
    time.sleep(1.0)  # the killed sweep's worker notices its parent died and exits
    assert main(sweep_cmd(out, "--workers", "2")) == 0
    after = finished(out)
    expected = {f"CheeseCorner-v0__{size}__max_steps=30__size=7__s{seed}" for size in ("nano", "micro")
                for seed in (0, 1)}
    assert set(after) == expected
    assert all(after[k] == before[k] for k in before), "a finished trial ran again"
    for run in expected:
        done = json.loads((out / "runs" / run / "done.json").read_text())
        assert done["global_step"] == 8192
        steps = [json.loads(x)["step"] for x in (out / "runs" / run / "evals.jsonl").read_text().splitlines()]
        assert steps == [0, 0, 4096, 4096, 8192, 8192], (run, steps)  # each evaluation once, in order
    # the evaluator fills in more episodes for every checkpoint, then has nothing left to do
    assert main(["eval", str(out), "--episodes", "24", "--workers", "2"]) == 0
    files = sorted((out / "runs").glob("*/episodes/step_*.jsonl"))
    assert len(files) == 4 * 3
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert len(lines) == 48 and {r["split"] for r in lines} == {"train", "test"}
    from capgap.eval.records import EPISODE_KEYS

    assert tuple(lines[0]) == EPISODE_KEYS
    assert (lines[0]["rung"], lines[0]["rung_index"]) == (("micro", 1) if "__micro__" in str(files[0]) else ("nano", 0))
    # the recorded level is exactly the one played: eval env i plays the first level of seed 2^40 + i
    # (62-bit indices: a float round trip would corrupt them)
    import numpy as np

    from capgap.envs.rng import episode_indices
    from capgap.eval.rollout import EVAL_SEED_BASE

    train_lines = [r for r in lines if r["split"] == "train"]
    expected_levels = episode_indices(EVAL_SEED_BASE + np.arange(len(train_lines)), np.zeros(len(train_lines)), 0)
    assert [r["level"] for r in train_lines] == expected_levels.tolist()
    assert max(expected_levels) > 2**53
    stamp = files[0].stat().st_mtime
    assert main(["eval", str(out), "--episodes", "24"]) == 0
    assert files[0].stat().st_mtime == stamp
    # and the report of the whole sweep
    assert main(["report", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "| nano |" in report and "| micro |" in report
    rows = json.loads((out / "report" / "report.json").read_text())
    final = [r for r in rows if r["step"] == 8192]
    assert len(final) == 2 and all(r["n_seeds"] == 2 for r in final)
    for name in ("ca_vs_params.png", "curves.png", "gap_vs_size.png"):
        assert (out / "report" / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.heavy
def test_ray_backend_runs_the_same_trials(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    args = ["--rungs", "0", "--seeds", "0..1", "--no-progress", *TRAIN]
    assert main(["sweep", "--out", str(local), "--workers", "2", *args]) == 0
    assert main(["sweep", "--out", str(ray_out), "--backend", "ray", *args]) == 0
    runs = sorted(p.name for p in (local / "runs").iterdir())
    assert runs == sorted(p.name for p in (ray_out / "runs").iterdir()) and len(runs) == 2
    for run in runs:  # same seed, same thread count: the same numbers, whichever backend ran it
        a = (local / "runs" / run / "evals.jsonl").read_text()
        b = (ray_out / "runs" / run / "evals.jsonl").read_text()
        assert a == b


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "capgap/Nope-v0"], "unknown env 'capgap/Nope-v0'"),
        (["--rungs", "3..1"], "malformed rung range '3..1'"),
        (["--seeds", ","], "empty seed list"),
        (["--seeds", "a,b"], "malformed seed 'a'"),
        (["--grid", "p_disambiguate"], "malformed sweep dial 'p_disambiguate'"),
        (["--grid", "colour=1,2"], "CheeseCorner has no dial 'colour'"),
        (["--dial", "p_disambiguate=0,0.1"], "--dial is gone: set dials with --dials NAME=VALUE"),
        (["--rungs", "0..9"], "rung '6' is out of range"),
        (["--rung", "3"], "--rung is set per trial by the sweep"),
        (["--sizes", "0..3"], "the ladder rungs are --rungs now (--sizes was renamed)"),
        (["--grid", "p_disambiguate=0,abc"], "CheeseCorner: p_disambiguate='abc' has the wrong type; expected a"),
        (["--dials", "max_steps=4.5"], "CheeseCorner: max_steps=4.5 has the wrong type; expected an integer"),
        (["--grid", "num_levels=1,x"], "--grid num_levels=x: num_levels takes whole numbers >= 0"),
        (["--grid", "lr=0.1,0.01"], "--grid lr: a grid runs over env dials and num_levels"),
        (["--init-where", "p_disambiguate=0"], "--init-where picks among the runs of a sweep"),
        (["--threads", "-1"], "--threads -1 must be >= 0"),
        (["--lr", "-1"], "--lr -1.0: the learning rate must be > 0"),
    ],
)
def test_bad_sweep_input(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--out", str(tmp_path / "x"), "--no-progress", *TRAIN, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capgap: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "x" / "runs").exists()


@pytest.mark.heavy
def test_sweep_dir_from_another_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", "--out", str(out), "--rungs", "0", "--seeds", "0", "--no-progress", *TRAIN]) == 0
    capsys.readouterr()
    assert main(["sweep", "--out", str(out), "--rungs", "0", "--seeds", "0", "--no-progress", *TRAIN,
                 "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "holds another sweep (it differs in: train)" in err


def test_eval_of_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "no capgap runs under" in capsys.readouterr().err


def test_a_second_sweep_on_the_same_out_stops_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While one sweep runs on --out (it holds <out>/.lock), another on the same --out ends at once, in one line."""
    import fcntl

    out = tmp_path / "sw"
    out.mkdir()
    with (out / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the first sweep holds it
        t0 = time.time()
        assert main(sweep_cmd(out, "--workers", "1", "--threads", "1")) == 2
        assert time.time() - t0 < 10
    err = capsys.readouterr().err.strip()
    assert err == f"capgap: error: {out} is being trained by another process; wait for it or stop it", err
    assert not (out / "runs").exists()


def test_eval_names_a_corrupt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A garbage checkpoint (even one evaluated already) or a truncated config.json: one line naming it."""
    out = tmp_path / "sw"
    assert main(["sweep", "--out", str(out), "--rungs", "0", "--seeds", "0", "--no-progress", *TRAIN]) == 0
    run = next((out / "runs").iterdir())
    ckpt = run / "checkpoints" / f"step_{4096:010d}.pt"
    ckpt.write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["eval", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    line = err[err.index("capgap: error: "):].strip()
    assert line.startswith(f"capgap: error: checkpoint {ckpt} is unreadable") and "\n" not in line, err
    assert err.index("capgap: error: ") == 0 or err[err.index("capgap: error: ") - 1] == "\n", "glued onto the bar"
    ckpt.unlink()
    config = run / "config.json"
    config.write_text(config.read_text()[:40])
    assert main(["eval", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"capgap: error: {config} is corrupt" in err and err.strip().endswith("to start over"), err


def test_a_sweep_may_grow_but_not_change(tmp_path: Path) -> None:
    """More rungs, seeds or grid values in the same --out train beside the finished trials (a study
    run in parts); other training settings, or fewer trials, are refused."""
    from capgap.rundir import RunError
    from capgap.train.ppo import Args
    from capgap.train.sweep import prepare

    base = Args(total_steps=4096, dials=("size=7",))

    def sweep(rungs: list[str], seeds: list[int], grid: dict[str, list[str]], b: Args = base) -> Sweep:
        return Sweep(envs=["capgap/CheeseCorner-v0"], rungs=rungs, seeds=seeds, grid=grid, base=b, out=tmp_path)

    prepare(sweep(["nano"], [0], {"p_disambiguate": ["0"]}))
    prepare(sweep(["nano", "base"], [0, 1], {"p_disambiguate": ["0", "0.1"]}))  # grows
    recorded = json.loads((tmp_path / "sweep.json").read_text())
    assert recorded["rungs"] == ["nano", "base"] and recorded["grid"] == {"p_disambiguate": ["0", "0.1"]}
    for bad, why in ((sweep(["nano"], [0], {"p_disambiguate": ["0"]}), "rungs"),  # fewer
                     (sweep(["nano", "base"], [0, 1], {"p_disambiguate": ["0", "0.1"]},
                            dataclasses.replace(base, lr=0.01)), "train"),
                     (sweep(["nano", "base"], [0, 1], {"size": ["7"]}), "grid")):
        with pytest.raises(RunError, match=f"differs in: .*{why}.*a sweep may only grow"):
            prepare(bad)


def test_a_sweep_prints_its_cost_first_and_dry_run_stops_there(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["sweep", "--rungs", "nano,tiny", "--seeds", "0..1", "--out", str(out), "--total-steps", "100000",
                 "--dry-run"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("sweep: 4 trials to train in 2 jobs on ") and "of one core if every run" in line
    assert "competence" not in line and not out.exists()  # nothing trained, nothing written


def test_rungs_by_index_or_by_name_are_one_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--rungs 0..1`` and ``--rungs nano,micro`` train the same runs: the second finds the first's sweep
    (and its runs) and has nothing to do."""
    flags = ["--seeds", "0", "--out", str(tmp_path / "s"), "--total-steps", "512", "--eval-every", "512",
             "--eval-episodes", "4", "--num-envs", "16", "--num-steps", "8", "--num-minibatches", "2",
             "--threads", "1", "--no-progress", "--dials", "size=7"]
    assert main(["sweep", "--rungs", "0..1", *flags]) == 0
    capsys.readouterr()
    assert main(["sweep", "--rungs", "nano,micro", *flags]) == 0
    assert "every trial has finished" in capsys.readouterr().out
    from capgap import rundir

    run = next((tmp_path / "s" / "runs").iterdir())
    config = json.loads((run / "config.json").read_text())
    rundir.check_run_dir(run, {**config, "rung": "nano" if config["rung"] == "0" else config["rung"]})
