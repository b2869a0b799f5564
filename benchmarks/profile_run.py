"""Where a one-thread training run's time goes, by component (cProfile, cumulative seconds).

    python benchmarks/profile_run.py [--rung tiny] [--seeds 1] [--total-steps 245760] [--eval-every 81920]

Trains CheeseCorner 9×9 at the default batch under ``cProfile`` (``--seeds 3``: three seeds as one
batched group) and splits the wall time into: the env engine's steps (``GridCore.step``), network
forward passes (rollout and minibatches), backward passes, optimizer steps, per-seed gradient
clipping, action sampling, evaluation (``evaluate_and_log``: episodes, pictures, episode files),
checkpoints, TensorBoard scalars, and the rest (GAE, indexing, Python). The components nest
(evaluation runs forward passes and engine steps of its own): each row counts its calls outside
evaluation, and the evaluation row counts all of evaluation.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import tempfile
import time

import torch

from capgap.train.ppo import Args, train_seeds

LABELS = {
    "step": "env engine (GridCore.step)",
    "_wrapped_call_impl": "network forward (rollout, minibatches)",
    "backward": "backward passes",
    "wrapper": "optimizer steps (Adam)",
    "clip_grad_norms_": "per-seed gradient clipping",
    "evaluate_and_checkpoint": "evaluation + checkpoints (both splits, every seed)",
    "add_scalar": "TensorBoard scalars",
    "adam.py:__init__": "Adam's construction (its first use imports torch._dynamo: once per process)",
}
"""Friendly names of the functions the training flow calls (``_train``'s direct callees)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rung", default="tiny")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--total-steps", type=int, default=245_760)
    p.add_argument("--eval-every", type=int, default=81_920)
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        runs = [Args(rung=a.rung, seed=s, total_steps=a.total_steps, eval_every=a.eval_every, threads=1,
                     progress=False, out=out) for s in range(a.seeds)]
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(train_seeds, runs)
        wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    flow = [k for k in stats if k[2] == "_train" and k[0].endswith("ppo.py")]
    rows: dict[str, float] = {}
    for (file, _, name), (_, _, _, _, callers) in stats.items():
        sec = sum(c[3] for caller, c in callers.items() if caller in flow)
        if sec > 0:
            base = os.path.basename(file)
            label = LABELS.get(f"{base}:{name}", LABELS.get(name, f"{name} ({base})" if file != "~" else name))
            rows[label] = rows.get(label, 0.0) + sec
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; {a.rung}, "
          f"{a.seeds} seed(s), {a.total_steps:,} steps each, evaluation every {a.eval_every:,}, one thread\n")
    print("| what the training flow calls | seconds | share of wall |")
    print("|---|---:|---:|")
    shown = 0.0
    for label, sec in sorted(rows.items(), key=lambda kv: -kv[1]):
        if sec >= 0.01 * wall:
            shown += sec
            print(f"| {label} | {sec:.1f} | {100 * sec / wall:.0f}% |")
    print(f"| everything else (setup, smaller calls, the flow's own Python) | {wall - shown:.1f} | "
          f"{100 * (wall - shown) / wall:.0f}% |")
    print(f"| **wall** | {wall:.1f} | {a.seeds * a.total_steps / wall:,.0f} env-steps/s under the profiler |")


if __name__ == "__main__":
    main()
