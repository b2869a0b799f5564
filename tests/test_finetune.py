"""Fine-tuning (``capgap train --init-from RUN``): another run's network as the start, logged like any run,
resumable after a kill, and a one-line refusal of a network that does not fit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import configs
import pytest
import torch

from capgap import rundir
from capgap.rundir import load_agent
from capgap.train.cli import main
from capgap.train.ppo import Args, train

# a small source run: the nano rung on a 7x7 maze (as tests/test_train.py's)
SOURCE = configs.SMALL
# repair on 4 fixed disambiguating levels
REPAIR = dict(SOURCE, dials=("size=7", "max_steps=40", "p_disambiguate=1"), num_levels=4)


def eval_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(Args(**SOURCE, out=str(tmp_path_factory.mktemp("source"))))


@pytest.fixture(scope="module")
def repaired(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(Args(**REPAIR, init_from=str(source), out=str(tmp_path_factory.mktemp("repair"))))


def test_starts_from_the_source_network_and_logs_c_and_a(source: Path, repaired: Path) -> None:
    assert repaired.name == "CheeseCorner-v0__nano__max_steps=40__p_disambiguate=1__size=7__levels=4__from=" \
                           f"{source.name}__s0"
    # step 0 of the repair plays the source's final network: the same test levels, the same numbers
    first = next(r for r in eval_rows(repaired) if r["step"] == 0 and r["split"] == "test")
    last_step = max(r["step"] for r in eval_rows(source))
    final = next(r for r in eval_rows(source) if r["step"] == last_step and r["split"] == "test")
    assert first == {**final, "step": 0}
    # its train split stays the task the source learned (p_disambiguate=0), not the repair levels
    first_train = next(r for r in eval_rows(repaired) if r["step"] == 0 and r["split"] == "train")
    final_train = next(r for r in eval_rows(source) if r["step"] == last_step and r["split"] == "train")
    assert first_train == {**final_train, "step": 0}
    # ...and it trains from there like any run: C and A of both splits at every evaluation
    steps = sorted({r["step"] for r in eval_rows(repaired)})
    assert steps == [0, 4096, 8192, 12288] and {"C", "A", "proxy"} <= set(eval_rows(repaired)[-1])
    before, _ = load_agent(source)
    after, _ = load_agent(repaired)
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values(),
                                                     strict=True))


@pytest.mark.heavy
def test_a_killed_repair_resumes_to_the_same_result(source: Path, repaired: Path, tmp_path: Path,
                                                    kill_and_rerun) -> None:
    cmd = [sys.executable, "-m", "capgap.train.cli", "train", "--out", str(tmp_path), "--init-from", str(source),
           "--rung", "nano", "--num-envs", "64", "--num-steps", "32", "--total-steps", str(64 * 32 * 6),
           "--eval-every", str(64 * 32 * 2), "--eval-episodes", "32", "--num-levels", "4", "--threads", "1",
           "--no-progress", "--dials", "size=7", "max_steps=40", "p_disambiguate=1"]
    run_dir = tmp_path / repaired.name
    kill_and_rerun(cmd, run_dir, 4096)
    assert eval_rows(run_dir) == eval_rows(repaired)


@pytest.mark.parametrize(("change", "message"), [
    ({"env": "capgap/LavaShift-v0", "dials": ()}, "its env is 'capgap/CheeseCorner-v0', this run's "
                                                  "'capgap/LavaShift-v0'"),
    ({"family": "mlp"}, "its family is 'conv', this run's 'mlp'"),
    ({"rung": "micro"}, "its rung is 'nano', this run's 'micro'"),
    ({"dials": ("size=9", "max_steps=40")}, "its network sees other observations"),
])
def test_refuses_a_network_that_does_not_fit(source: Path, tmp_path: Path, change: dict, message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--out", str(tmp_path), "--init-from", str(source), "--total-steps", "4096",
            "--rung", change.get("rung", "nano"), "--family", change.get("family", "conv"),
            "--env", change.get("env", "capgap/CheeseCorner-v0"), "--dials", *change.get("dials", SOURCE["dials"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not any(tmp_path.iterdir()), "a refused run leaves no run dir behind"


def test_init_from_a_checkpoint_file_or_nothing(source: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = rundir.checkpoints(source)[0]  # step 0: the untrained network
    run = train(Args(**{**REPAIR, "total_steps": 2048, "eval_every": 2048}, init_from=str(ckpt), out=str(tmp_path)))
    assert run.name.endswith(f"from={source.name}__s0")
    assert main(["train", "--out", str(tmp_path), "--init-from", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
