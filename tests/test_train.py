"""PPO runs: TensorBoard contents read back with TensorBoard's reader, reproducibility, resume,
checkpoints, bad input, and (small) evidence that learning happens."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import configs
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capgap.rundir import RunError, latest_checkpoint, load_agent
from capgap.train.cli import main
from capgap.train.ppo import Args, train

# a small, fast configuration: 7x7 maze, tiny batches
SMALL = dict(configs.SMALL, inspect=True)


def events(run_dir: Path) -> EventAccumulator:
    files = list(run_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {run_dir}"
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def scalars(run_dir: Path, skip: tuple[str, ...] = ("charts/SPS",)) -> dict[str, list[tuple[int, float]]]:
    ea = events(run_dir)
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"] if t not in skip}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(Args(**SMALL, out=str(tmp_path_factory.mktemp("runs"))))


def test_tensorboard_holds_the_curves(small_run: Path) -> None:
    ea = events(small_run)
    tags = ea.Tags()
    for split in ("train", "test"):
        for m in ("C", "A", "proxy", "return"):
            steps = [e.step for e in ea.Scalars(f"eval/{split}/{m}")]
            assert steps == [0, 4096, 8192, 12288], (split, m, steps)
            assert all(0 <= e.value <= 1 for e in ea.Scalars(f"eval/{split}/{m}"))
        assert f"eval/{split}/visits" in tags["images"]
    assert "eval/test/trajectory" in tags["images"]
    # chance beside every curve: the uniform-random policy's scores (flat lines), and the test split
    # calibrated against them (docs/metrics.md; the env's references, capgap.eval.chance)
    from capgap.eval import chance

    refs = chance.references("capgap/CheeseCorner-v0", {"size": 7, "max_steps": 40})
    for split in ("train", "test"):
        for m in ("C", "A", "proxy"):
            values = [(e.step, e.value) for e in ea.Scalars(f"eval/{split}/{m}_random")]
            assert values == [(s, pytest.approx(refs.score("random", split)[m])) for s in (0, 4096, 8192, 12288)]
    raw = {m: {e.step: e.value for e in ea.Scalars(f"eval/test/{m}")} for m in ("C", "A", "proxy")}
    for m, hat in (("C", "C_hat"), ("A", "A_hat"), ("proxy", "proxy_hat")):
        top = refs.score("proxy" if m == "proxy" else "goal", "test")[m]
        for e in ea.Scalars(f"eval/test/{hat}"):
            assert e.value == pytest.approx(chance.normalise(raw[m][e.step], refs.score("random", "test")[m], top),
                                            abs=1e-5), (hat, e.step)
    for t in ("losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "charts/SPS"):
        assert [e.step for e in ea.Scalars(t)] == [2048 * i for i in range(1, 7)], t
    # episode statistics really reach TensorBoard (the auto-reset pitfall)
    returns = ea.Scalars("charts/episodic_return")
    assert len(returns) >= 5 and any(e.value > 0 for e in returns)
    rates = [ea.Scalars(f"charts/{o}_rate")[-1].value for o in ("goal", "proxy", "neither")]
    assert sum(rates) == pytest.approx(1.0)
    # hyperparameters, custom scalars and HParams, in this run dir and no sub-run
    assert "hyperparameters/text_summary" in tags["tensors"]
    assert "custom_scalars__config__" in tags["tensors"]
    assert set(ea.PluginTagToContent("hparams")) >= {"_hparams_/experiment", "_hparams_/session_start_info"}
    assert not [p for p in small_run.rglob("events.out.tfevents.*") if p.parent != small_run]


def test_eval_log_matches_tensorboard(small_run: Path) -> None:
    lines = [json.loads(x) for x in (small_run / "evals.jsonl").read_text().splitlines()]
    ea = events(small_run)
    for ln in lines:
        tb = {e.step: e.value for e in ea.Scalars(f"eval/{ln['split']}/A")}
        assert tb[ln["step"]] == pytest.approx(ln["A"])
    done = json.loads((small_run / "done.json").read_text())
    assert done["global_step"] == 12288
    last = {(ln["split"], k): ln[k] for ln in lines if ln["step"] == 12288 for k in ("C", "A")}
    assert {k: done[k] for k in ("C_train", "A_train", "C_test", "A_test")} == {
        f"{k}_{split}": v for (split, k), v in last.items()}, "done.json holds the final evaluation's C and A"
    assert sorted(p.name for p in (small_run / "checkpoints").glob("*.pt")) == [
        f"step_{s:010d}.pt" for s in (0, 4096, 8192, 12288)]
    agent, config = load_agent(small_run)
    assert config["seed"] == 0 and agent.num_params() > 0


def test_same_seed_same_scalars(small_run: Path, tmp_path: Path) -> None:
    again = train(Args(**SMALL, out=str(tmp_path)))
    assert scalars(again) == scalars(small_run)
    other = train(Args(**{**SMALL, "seed": 1}, out=str(tmp_path)))
    assert scalars(other) != scalars(small_run)


def test_killed_run_resumes_to_the_same_result(small_run: Path, tmp_path: Path, kill_and_rerun) -> None:
    cmd = [sys.executable, "-m", "capgap.train.cli", "train", "--out", str(tmp_path), *configs.flags(SMALL)]
    run_dir = tmp_path / small_run.name
    kill_and_rerun(cmd, run_dir, 4096)
    assert json.loads((run_dir / "done.json").read_text())["global_step"] == 12288
    resumed, straight = scalars(run_dir), scalars(small_run)
    for tag in ("eval/test/A", "eval/train/C", "losses/value_loss", "inspect/probe/head", "inspect/forecast/best"):
        assert resumed[tag] == straight[tag], tag
    steps = [json.loads(x)["step"] for x in (run_dir / "inspect.jsonl").read_text().splitlines()]
    assert steps == [0, 4096, 8192, 12288]  # what the killed process logged after its checkpoint is forgotten


def test_inspection_changes_nothing_in_training(small_run: Path, tmp_path: Path) -> None:
    """Inspection plays with its own seeded sampler and draws nothing from the training streams:
    without it, every other scalar is the same."""
    plain = train(Args(**{**SMALL, "inspect": False}, out=str(tmp_path)))
    assert not (plain / "inspect.jsonl").exists()
    inspected = scalars(small_run)
    assert {t for t in inspected if t.startswith("inspect/")} >= {"inspect/A_ds", "inspect/probe/head"}
    assert {t for t in inspected if t.startswith("monitor/")} >= {"monitor/detect", "monitor/A_oversight"}
    assert scalars(plain) == {t: v for t, v in inspected.items() if not t.startswith(("inspect/", "monitor/"))}


def test_finished_run_is_not_run_twice(small_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (small_run / "done.json").read_text()
    train(Args(**SMALL, out=str(small_run.parent)))
    assert "already finished" in capsys.readouterr().out
    assert (small_run / "done.json").read_text() == before


def test_corrupt_and_mismatched_checkpoints(tmp_path: Path) -> None:
    args = Args(**SMALL, out=str(tmp_path))
    run_dir = train(args)
    (run_dir / "done.json").unlink()
    ckpt = latest_checkpoint(run_dir)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"checkpoint .*step_0000012288.pt is unreadable .* delete it to resume"):
        train(args)
    state = torch.load(run_dir / "checkpoints" / f"step_{8192:010d}.pt", weights_only=True)
    state["agent"] = {k: v[..., :1] for k, v in state["agent"].items()}
    torch.save(state, ckpt)
    with pytest.raises(RunError, match="holds a different network"):
        train(args)


def test_checkpoints_are_plain_data(small_run: Path) -> None:
    """Every checkpoint loads with weights_only=True (no code runs) and holds no engine object."""
    for path in (small_run / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        assert state["format"] == 2 and isinstance(state["core"]["obs"], torch.Tensor)


def test_checkpoint_from_before_the_format_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint that pickles the engine (the old format) is refused, in one line that says what to do."""
    import capgap.envs as E

    args = Args(**SMALL, out=str(tmp_path))
    run_dir = train(args)
    (run_dir / "done.json").unlink()
    ckpt = latest_checkpoint(run_dir)
    state = torch.load(ckpt, weights_only=True)
    old = {k: v for k, v in state.items() if k != "format"}
    old["core"] = E.make_core("capgap/CheeseCorner-v0", 4, size=7)  # what the old trainer pickled
    torch.save(old, ckpt)
    with pytest.raises(RunError, match=r"cannot be loaded safely: it was written by capgap before checkpoints"):
        train(args)
    assert main(["eval", str(run_dir), "--episodes", "64", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    line = err[err.index("capgap: error: "):].splitlines()[0]  # after the eval progress bar
    assert line.startswith("capgap: error: checkpoint ") and line.endswith("evaluate it with that older capgap"), err


@pytest.mark.parametrize("full_at", [1, 2])
def test_full_disk_stops_in_one_line_and_rerunning_resumes(full_at: int, small_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The disk fills while the first or second checkpoint is written: one line, exit 2, the earlier
    files intact; the same command, re-run, resumes (or starts afresh, forgetting what the failed start
    logged) and finishes with the uninterrupted run's numbers, each evaluation logged once."""
    import errno

    real_save, saves = torch.save, []

    def save_until_full(obj, path, *a, **kw):
        saves.append(path)
        if len(saves) == full_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **kw)

    argv = ["train", "--out", str(tmp_path), "--rung", "nano",
            "--num-envs", "64", "--num-steps", "32", "--total-steps", str(64 * 32 * 6), "--eval-every",
            str(64 * 32 * 2), "--eval-episodes", "32", "--dials", "size=7", "max_steps=40", "--no-progress",
            "--threads", "1", "--inspect"]
    monkeypatch.setattr(torch, "save", save_until_full)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    run_dir = tmp_path / small_run.name
    failed = run_dir / "checkpoints" / f"step_{4096 * (full_at - 1):010d}.pt"
    assert err == (f"capgap: error: no space left on device writing {failed}"
                   "; free some space and re-run the same command: it resumes from the last checkpoint"), err
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step_{0:010d}.pt"][:full_at - 1], \
        "no partial file left"
    monkeypatch.setattr(torch, "save", real_save)
    assert main(argv) == 0
    assert json.loads((run_dir / "done.json").read_text())["global_step"] == 12288
    assert scalars(run_dir) == scalars(small_run)
    steps = [json.loads(x)["step"] for x in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert steps == [0, 0, 4096, 4096, 8192, 8192, 12288, 12288]
    assert [json.loads(x)["step"] for x in (run_dir / "inspect.jsonl").read_text().splitlines()] == [
        0, 4096, 8192, 12288]


def test_full_disk_in_tensorboard_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk met by TensorBoard's writer (not one of our own writes) also ends in one line."""
    import errno

    from torch.utils.tensorboard import SummaryWriter

    def full(*a, **kw):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(SummaryWriter, "flush", full)
    with pytest.raises(RunError, match=r"^no space left on device writing .*; free some space and re-run"):
        train(Args(**SMALL, out=str(tmp_path)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dials", "p_disambiguate=abc"],
         "CheeseCorner: p_disambiguate='abc' has the wrong type; expected a number (default 0.0)"),
        (["--dials", "size=9.0"], "CheeseCorner: size=9.0 has the wrong type; expected an integer"),
        (["--dials", "max_steps=True"], "CheeseCorner: max_steps=True has the wrong type; expected an integer"),
        (["--env", "capgap/Nope-v0"], "unknown env 'capgap/Nope-v0'"),
        (["--rung", "9"], "rung '9' is out of range; rungs are 0..5 or nano"),
        (["--size", "3"], "--size is now --rung (the network's ladder rung); the grid side is the dial size"),
        (["--num-envs", "10", "--num-steps", "3", "--num-minibatches", "4"], "does not split into num_minibatches=4"),
        (["--total-steps", "100"], "total_steps=100 is less than one rollout"),
        (["--dials", "p_disambiguate"], "malformed dial 'p_disambiguate'"),
        (["--dials", "colour=3"], "CheeseCorner has no dial 'colour'"),
        (["--dial", "size=7"], "--dial is gone: set dials with --dials NAME=VALUE"),
        (["--lr", "-1"], "--lr -1.0: the learning rate must be > 0"),
        (["--gamma", "2"], "--gamma 2.0: the discount must be in (0, 1]"),
        (["--gamma", "0"], "--gamma 0.0: the discount must be in (0, 1]"),
        (["--threads", "-1"], "--threads -1: give a thread count >= 1"),
        (["--threads", "0"], "--threads 0: give a thread count >= 1"),
        (["--seed", "-1"], "--seed -1: a seed is an integer >= 0"),
        (["--device", "bogus"], "--device bogus: unknown device; use cpu, or cuda"),
        *([(["--device", "cuda"], "--device cuda: this torch (")] if not torch.cuda.is_available() else []),
        (["--num-minibatches", "0"], "does not split into num_minibatches=0"),
    ],
)
def test_bad_input_gets_one_line(argv: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """One line, exit status 2, and nothing written: the corrected command then runs as if it came first."""
    assert main(["train", "--out", str(tmp_path), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capgap: error: ") and message in err and "\n" not in err, err
    assert not list(tmp_path.iterdir()), "a rejected run left files behind"


def test_out_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    for out in (file, file / "runs"):
        assert main(["train", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"capgap: error: --out {out}: {file} is a file, not a directory; give a directory", err
    assert file.read_text() == "mine"


def test_ctrl_c_says_the_run_resumes(small_run: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while training: one line that says how to resume, status 2; the same command
    then says where it resumes from and finishes with the uninterrupted run's numbers."""
    import signal
    import subprocess
    import time

    cmd = [sys.executable, "-m", "capgap.train.cli", "train", "--out", str(tmp_path), "--rung", "nano",
           "--num-envs", "64", "--num-steps", "32", "--total-steps", str(64 * 32 * 6), "--eval-every",
           str(64 * 32 * 2), "--eval-episodes", "32", "--dials", "size=7", "max_steps=40", "--threads", "1",
           "--inspect"]
    run_dir = tmp_path / small_run.name

    def as_from_a_terminal() -> None:
        """Ctrl-C as a shell's foreground job gets it: a test runner's worker may ignore or block SIGINT
        (pytest-xdist's can), and a child inherits both across exec, so the run would never see it."""
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / f"step_{4096:010d}.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert not (run_dir / "done.json").exists(), "interrupted too late to test resuming"
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"capgap: error: interrupted; {small_run.name} is resumable: re-run the same command "
                           "to resume from its last checkpoint (step "), err
    assert "Traceback" not in err, err
    again = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, check=True)
    assert f"{small_run.name}: resuming from step " in again.stdout
    for tag in ("eval/test/A", "losses/value_loss", "inspect/probe/head"):
        assert scalars(run_dir)[tag] == scalars(small_run)[tag], tag


def test_a_hook_sees_every_evaluation(tmp_path: Path) -> None:
    """train(args, hooks=[...]) calls each hook after every evaluation, with the run's context, and
    puts its charts in the run header; ppo.py itself does not import the inspection package."""
    import subprocess

    from capgap.train.hooks import EvalContext

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[int, str]] = []

        def charts(self, config: dict) -> dict:
            return {"mine": ["Multiline", ["mine/x"]]}

        def on_evaluation(self, agent, step: int, ctx: EvalContext) -> None:
            self.calls.append((step, ctx.run_dir.name))
            assert not agent.training and ctx.dials == {"size": 7, "max_steps": 40}
            ctx.writer.add_scalar("mine/x", float(step), step)

    hook = Recorder()
    run = train(Args(**{**SMALL, "inspect": True}, out=str(tmp_path)), hooks=[hook])
    assert hook.calls == [(s, run.name) for s in (0, 4096, 8192, 12288)]
    assert [v for _, v in scalars(run)["mine/x"]] == [0, 4096, 8192, 12288]
    assert not (run / "inspect.jsonl").exists(), "hooks given: the default ones (--inspect) are not added"
    code = "import sys, capgap.train.ppo; print('capgap.eval.inspect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_out_dir_holding_another_run(small_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--out", str(small_run.parent), "--name", small_run.name, "--lr", "0.1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds another run (its config differs in:" in err and "lr" in err


@pytest.mark.heavy
def test_learning_happens_and_the_goal_misgeneralises(gmg_run: Path) -> None:
    """CI-sized science check (the full one: experiments/cheese_corner_gmg.py, and the slow test below).

    On a 7x7 CheeseCorner maze a tiny agent learns to find the training cheese (train A rises
    well above the random policy's), keeps its skill on the test split (C), and mostly runs to
    the corner there (test A stays low, the proxy rate far above uniform random play's): goal
    misgeneralisation, at small scale, seeded.
    """
    ea = events(gmg_run)
    train_a = [e.value for e in ea.Scalars("eval/train/A")]
    test_c, test_a = ea.Scalars("eval/test/C")[-1].value, ea.Scalars("eval/test/A")[-1].value
    assert train_a[-1] >= train_a[0] + 0.4 and train_a[-1] >= 0.75, train_a
    assert test_c >= 0.75 and test_a <= 0.45, (test_c, test_a)
    # ...and relative to chance on the same levels (uniform random play: test C 0.56, A 0.39, proxy 0.17 on
    # this 7x7 maze): the skill and the corner preference are not wandering (measured: C_hat 0.77, proxy_hat 1.01)
    c_hat, proxy_hat = ea.Scalars("eval/test/C_hat")[-1].value, ea.Scalars("eval/test/proxy_hat")[-1].value
    assert c_hat >= 0.5 and proxy_hat >= 0.5, (c_hat, proxy_hat)


@pytest.mark.slow
def test_goal_misgeneralisation_at_default_dials(tmp_path: Path) -> None:
    """The full science check (``pytest --runslow``, ~8 min on one core): the documented experiment.

    At CheeseCorner's default dials a tiny agent trained 2M steps reaches train A >= 0.9, keeps
    test C >= 0.8 with test A <= 0.5, and training with p_disambiguate=0.25 raises test A by >= 0.2.
    """
    path = Path(__file__).parents[1] / "experiments" / "cheese_corner_gmg.py"
    spec = importlib.util.spec_from_file_location("cheese_corner_gmg", path)
    assert spec and spec.loader
    gmg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gmg)
    rows = gmg.measure(out=str(tmp_path), progress=False)
    checks = gmg.claims(rows)
    assert all(checks.values()), (checks, rows)


def test_mlp_family_trains(tmp_path: Path) -> None:
    run = train(Args(**{**SMALL, "family": "mlp", "total_steps": 4096, "eval_every": 4096}, out=str(tmp_path)))
    assert run.name == "CheeseCorner-v0__nano-mlp__max_steps=40__size=7__s0"
    agent, config = load_agent(run)
    assert config["family"] == "mlp" and agent.family == "mlp"


def test_a_run_does_not_depend_on_the_environments_thread_count(tmp_path: Path) -> None:
    """``--threads`` takes effect before the first tensor is made: the same command logs the same
    numbers whether or not the environment pinned OpenMP to one thread (it did not, once: the
    network's initialisation ran on every core's threads and rounded differently)."""
    import os
    import subprocess

    argv = [sys.executable, "-m", "capgap.train.cli", "train", "--rung", "tiny", "--num-envs", "64", "--num-steps",
            "32", "--total-steps", "8192", "--eval-every", "4096", "--eval-episodes", "32", "--dials", "size=5",
            "max_steps=20", "--no-progress"]
    for name, omp in (("pinned", "1"), ("free", None)):
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env |= {"OMP_NUM_THREADS": omp} if omp else {}
        subprocess.run([*argv, "--out", str(tmp_path / name)], env=env, check=True, capture_output=True)
    run = "CheeseCorner-v0__tiny__max_steps=20__size=5__s0"
    assert scalars(tmp_path / "pinned" / run) == scalars(tmp_path / "free" / run)
