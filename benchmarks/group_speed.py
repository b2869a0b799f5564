"""Training several seeds as one batched group, against one seed per process: env-steps/s per core.

    python benchmarks/group_speed.py [--rungs nano,micro,tiny,small,base] [--seeds 3] [--iterations 12]

For each rung, on CheeseCorner 9×9 at the default batch, one thread: ``train_seeds`` with one seed
(what a lone run is) and with ``--seeds`` seeds in one process, evaluation off, each after a short
warm-up in the same process. The table shows the env-steps/s each achieves summed over its seeds
(what one core delivers to a sweep) and their ratio, measured in the same run on the same
machine: the evidence for ``capgap.train.sweep.GROUP_MAX_PARAMS``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import torch

from capgap.agents import build
from capgap.agents.stack import SeedStack
from capgap.train.ppo import Args, train_seeds


def speed(rung: str, n_seeds: int, iterations: int, out: str, grouped: bool = True) -> float:
    """Env-steps/s of one process training ``n_seeds`` seeds of ``rung`` (all seeds counted);
    ``grouped=False``: the stack evaluated by ``torch.func.vmap`` instead of grouped layers."""
    SeedStack.grouped = grouped
    base = Args(rung=rung, eval_every=10**12, eval_episodes=8, threads=1, progress=False, out=out)
    batch = base.num_envs * base.num_steps
    runs = [Args(**{**base.__dict__, "seed": s, "total_steps": batch * iterations, "name": f"{rung}_{n_seeds}_{s}"})
            for s in range(n_seeds)]
    dirs = train_seeds(runs)
    SeedStack.grouped = True
    return sum(json.loads((d / "done.json").read_text())["train_sps"] for d in dirs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rungs", default="nano,micro,tiny,small,base")
    p.add_argument("--seeds", type=int, default=3, help="seeds in the group")
    p.add_argument("--iterations", type=int, default=12, help="PPO iterations per measurement (4,096 steps each)")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
          f"{platform.python_version()}; one thread, CheeseCorner 9x9, {a.iterations} iterations\n")
    print(f"| rung | parameters | 1 seed: steps/s | {a.seeds} seeds as one group (grouped layers): steps/s, all "
          "seeds | gain | the same group by vmap | gain |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as out:
        for rung in a.rungs.split(","):
            speed(rung, 1, 2, f"{out}/warm")  # warm-ups: first-call costs out of the measurement
            speed(rung, a.seeds, 2, f"{out}/warm")
            lone = speed(rung, 1, a.iterations, out)
            group = speed(rung, a.seeds, a.iterations, out)
            speed(rung, a.seeds, 2, f"{out}/warm_vmap", grouped=False)
            by_vmap = speed(rung, a.seeds, a.iterations, out + "/vmap", grouped=False)
            params = build("capgap/CheeseCorner-v0", rung).num_params()
            print(f"| {rung} | {params:,} | {lone:,.0f} | {group:,.0f} | {group / lone:.2f}x | {by_vmap:,.0f} | "
                  f"{by_vmap / lone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
