"""Env throughput: steps per second of every capgap env, against Minigrid measured in the same run.

    python benchmarks/env_speed.py [--seconds 1] [--threads N] [--envs ID ...] [--batches B ...] [--device cuda]

Every env is measured at its default dials, and CheeseCorner also on the 13×13 maze of the
literature (``size=13 max_steps=256``). Each capgap env runs B envs on its batched torch engine
(the path the trainer uses), with auto-reset and uniformly random actions (drawn ahead into a
table of 64 steps and cycled, so the timing is the env's, not the random number generator's).
Minigrid's ``MiniGrid-Empty-8x8-v0`` runs as a single gymnasium env with random actions and
resets, as a user would run it. ``level µs``: the time to generate one level (numpy, on the CPU,
in batches of 512, as the engine's level source does); at large B it bounds the speed (a level
per episode). Every figure is the best of three timings. Prints a markdown table; ``ratio`` =
capgap's best SPS / Minigrid's SPS.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import numpy as np
import torch

import capgap.envs as E

BATCHES = (1024, 4096, 16384)
REPEATS = 3
"""Timings per measurement; the best is reported (capgap and Minigrid alike): on a shared machine
the slow ones measure the neighbours."""
EXTRA = {"capgap/CheeseCorner-v0": {"size": 13, "max_steps": 256}}
"""Configurations measured besides every env's defaults."""


def capgap_sps(env_id: str, num_envs: int, split: str, seconds: float, device: str = "cpu", **dials: int) -> float:
    core = E.make_core(env_id, num_envs, split=split, device=device, **dials)
    core.reset(0)
    actions = torch.randint(0, 4, (64, num_envs), generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if core.device.type == "cuda" else (lambda: None)
    for i in range(50):  # warm up: first level batches, allocator
        core.step(actions[i % 64])
    best = 0.0
    for _ in range(REPEATS):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            core.step(actions[n % 64])
            n += 1
        sync()
        best = max(best, n * num_envs / (time.perf_counter() - t0))
    return best


def level_us(env_id: str, split: str, batch: int = 512, batches: int = 20, **dials: int) -> float:
    """Microseconds to generate one level (numpy, in batches of ``batch`` as the engine's level
    source does), the best of three timings."""
    task = E.task_class(env_id).from_dials(**dials)
    best = float("inf")
    for r in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(batches):
            task.levels(split, np.arange(batch) + (r * batches + i) * batch)
        best = min(best, (time.perf_counter() - t0) / (batch * batches) * 1e6)
    return best


def minigrid_sps(seconds: float) -> float:
    import minigrid  # noqa: F401  (registers the MiniGrid envs)

    env = gym.make("MiniGrid-Empty-8x8-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
        n += 1
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per timing (best of 3 is reported)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--envs", nargs="*", default=list(E.TASKS), help="env ids to measure")
    p.add_argument("--batches", nargs="*", type=int, default=list(BATCHES), help="numbers of envs B to measure")
    p.add_argument("--device", default="cpu", help="torch device of the engine (Minigrid runs on the CPU)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mg = max(minigrid_sps(a.seconds) for _ in range(REPEATS))
    gpu = f", engine on {torch.cuda.get_device_name(a.device)}" if a.device.startswith("cuda") else ""
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({a.threads} threads), python {platform.python_version()}{gpu}")
    print(f"Minigrid MiniGrid-Empty-8x8-v0, 1 env: {mg:,.0f} SPS\n")
    print("| env | split | " + " | ".join(f"B={b:,}" for b in a.batches) + " | ratio vs Minigrid (best) | level µs |")
    print("|---|---|" + "---:|" * (len(a.batches) + 2))
    configs = [(env_id, {}) for env_id in a.envs] + [(e, d) for e, d in EXTRA.items() if e in a.envs]
    for env_id, dials in configs:
        side = E.task_class(env_id).from_dials(**dials).size
        for split in E.SPLITS:
            sps = [capgap_sps(env_id, b, split, a.seconds, a.device, **dials) for b in a.batches]
            cells = " | ".join(f"{s / 1e6:.2f}M" for s in sps)
            us = level_us(env_id, split, **dials)
            print(f"| {env_id} {side}×{side} | {split} | {cells} | {max(sps) / mg:,.0f}x | {us:.2f} |", flush=True)


if __name__ == "__main__":
    main()
