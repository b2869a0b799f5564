"""Which network family learns fastest per wall-clock second? conv vs mlp vs impala on CheeseCorner.

    # 1. the learning runs (one sweep per family and grid; resumable), e.g. at the default 9×9:
    capgap sweep --family conv --rungs tiny,small --seeds 0 --total-steps 2_000_000 \\
        --eval-every 100_000 --eval-episodes 256 --out sweeps/family9_conv
    # 2. steps to train A >= 0.9 from those runs, training speed measured here, wall time = steps / speed:
    python experiments/family_comparison.py sweeps/family9_* [--threads 1]
    # or the speed of every family, rung and grid alone, all measured in one run:
    python experiments/family_comparison.py --speed-only

Steps to learn come from each run's ``evals.jsonl`` (the first evaluation with train-split
A >= ``metrics.LEARNED``). Speed is measured in this process, every (family, rung, grid) in the
same run, one torch thread each as a sweep trial runs (so ratios between families hold however
fast the machine is): ``capgap.train.ppo.train`` with evaluation off, after a warm-up run, as
``benchmarks/train_speed.py`` does. Wall time to learn = steps / speed, so it excludes the
in-training evaluations (the same for every family) and the contention of the runs' own sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from capgap import rundir
from capgap.agents import FAMILIES, build, rung
from capgap.envs import parse_dials
from capgap.eval.metrics import LEARNED
from capgap.eval.records import split_key
from capgap.train.ppo import Args, train

ENV = "capgap/CheeseCorner-v0"


def steps_to_learn(run_dir: Path) -> tuple[int | None, int, float]:
    """(first step with train A >= LEARNED or None, last step evaluated, train A there)."""
    rows = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    train_rows = sorted((r for r in rows if r["split"] == "train"), key=lambda r: r["step"])
    hit = next((r["step"] for r in train_rows if r["A"] >= LEARNED), None)
    return hit, train_rows[-1]["step"], train_rows[-1]["A"]


def training_sps(env: str, rung_name: str, family: str, dials: tuple[str, ...], threads: int,
                 iterations: int = 8) -> float:
    """Steps/s of PPO (rollout + update, evaluation off) after a 2-iteration warm-up run."""
    batch = Args().num_envs * Args().num_steps
    sps = 0.0
    for n in (2, iterations):
        with tempfile.TemporaryDirectory() as out:
            run = train(Args(env=env, rung=rung_name, family=family, total_steps=batch * n, eval_every=10**12,
                             eval_episodes=8, out=out, threads=threads, progress=False, dials=dials))
            sps = json.loads((run / "done.json").read_text())["train_sps"]
    return sps


GRIDS = {"9×9 (default)": (), "13×13": ("size=13", "max_steps=256")}


def speed_table(threads: int) -> None:
    """Training steps/s of every family at the tiny and small rungs on both grids, in one run."""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({threads} thread), python {platform.python_version()}\n")
    print("| family | rung | grid | params | steps/s |")
    print("|---|---|---|---:|---:|")
    for family in FAMILIES:
        for rung_name in ("tiny", "small"):
            for grid, dials in GRIDS.items():
                params = build(ENV, rung_name, family, **parse_dials(dials)).num_params()
                sps = training_sps(ENV, rung_name, family, dials, threads)
                print(f"| {family} | {rung_name} | {grid} | {params:,} | {sps:,.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="*", help="sweep dirs (or run dirs) of the learning runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the speed measurement")
    p.add_argument("--speed-only", action="store_true", help="measure conv/mlp/impala x tiny/small x 9x9/13x13")
    a = p.parse_args()
    if a.speed_only:
        speed_table(a.threads)
        return
    runs = sorted({r for s in a.sweeps for r in ([Path(s)] if (Path(s) / "config.json").exists()
                                                 else Path(s).glob("runs/*")) if (r / "evals.jsonl").exists()})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({a.threads} thread), python {platform.python_version()}\n")
    print(f"| family | rung | params | grid | seed | steps to train A >= {LEARNED} | train A at end (steps) "
          "| steps/s | wall time to learn |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    speed: dict[tuple, float] = {}
    for run_dir in runs:
        cfg = rundir.read_config(run_dir)
        dials = tuple(cfg["dials"])
        key = (cfg["env"], cfg["rung"], cfg["family"], dials)
        if key not in speed:
            speed[key] = training_sps(*key, threads=a.threads)
        params = build(cfg["env"], cfg["rung"], cfg["family"], **parse_dials(dials)).num_params()
        hit, last, a_end = steps_to_learn(run_dir)
        grid = next((d.split("=")[1] for d in dials if d.startswith("size=")), "default")
        wall = f"{hit / speed[key] / 60:.1f} min" if hit is not None else f"> {last / speed[key] / 60:.1f} min"
        print(f"| {cfg['family']} | {rung(cfg['rung']).name} | {params:,} | {grid} | {cfg['seed']} | "
              f"{f'{hit:,}' if hit is not None else f'not by {last:,}'} | {a_end:.2f} ({last:,}) | "
              f"{speed[key]:,.0f} | {wall} |", flush=True)
    print(f"\n{split_key('A', 'train')} >= {LEARNED} is the learned certificate's bar; wall time = steps / steps/s.")


if __name__ == "__main__":
    main()
