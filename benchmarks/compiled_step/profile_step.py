"""Scratch: where does one GridCore.step go at B=4096, CheeseCorner 13x13 max_steps=128 (1 thread)."""

import cProfile
import io
import pstats
import sys
import time

import numpy as np
import torch

import capgap.envs as E

torch.set_num_threads(1)
B = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
NL = int(sys.argv[2]) if len(sys.argv) > 2 else 0
core = E.make_core("capgap/CheeseCorner-v0", B, num_levels=NL, size=13, max_steps=128)
core.reset(0)
acts = torch.randint(0, 4, (64, B), generator=torch.Generator().manual_seed(0))
for i in range(300):
    core.step(acts[i % 64])
# episodes per step
n = 400
eps = 0
t0 = time.perf_counter()
for i in range(n):
    core.step(acts[i % 64])
    eps += int(core.episodes.done.sum())
dt = time.perf_counter() - t0
print(f"B={B} NL={NL}: {dt / n * 1e6:.0f} us/step, {B * n / dt / 1e6:.2f}M SPS, episodes/step {eps / n:.1f}")
# level gen cost per level
task = core.task
t0 = time.perf_counter()
task.levels("train", np.arange(4096) + 10**6)
lv = (time.perf_counter() - t0) / 4096 * 1e6
print(f"level gen {lv:.1f} us/level (batch 4096) -> {lv * eps / n:.0f} us/step amortised")
pr = cProfile.Profile()
pr.enable()
for i in range(n):
    core.step(acts[i % 64])
pr.disable()
s = io.StringIO()
pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
print(s.getvalue()[:6000])
s = io.StringIO()
pstats.Stats(pr, stream=s).sort_stats("cumtime").print_stats(20)
print(s.getvalue()[:4000])
