"""End-to-end PPO training speed per ladder rung, against Stable-Baselines3 in the same run.

    python benchmarks/train_speed.py [--family conv|mlp] [--threads 2] [--iterations 24]

For every rung of the size ladder on CheeseCorner 13×13 (``size=13 max_steps=256``):

* **capgap**: ``capgap.train.ppo.train`` with its default batch (256 envs × 16 steps, 4 epochs
  of 8 minibatches), evaluation off; steps/s of rollout + update (``train_sps``), after a short
  warm-up run in the same process.
* **SB3, as a user runs it**: ``stable_baselines3.PPO`` with its default hyperparameters
  (2,048 steps per env, 10 epochs of 64-sample minibatches) on 8 ``gymnasium.make`` envs in a
  ``DummyVecEnv``: the tool a user would otherwise pick, at a matching network size (our very
  network: our trunk as SB3's features extractor, in the same memory layout, linear heads).
* **SB3, equal work**: the same SB3 setup given capgap's batch, epochs and minibatch size
  (16 envs × 256 steps, 4 epochs of 512), so both do the same gradient work per sample.
* **FLOP/s**: FLOPs per training sample (counted by ``torch.utils.flop_counter`` on a forward
  and a backward pass: one forward in the rollout, forward + backward per epoch) × steps/s, as a
  fraction of a dense fp32 matmul's FLOP/s measured in the same run with the same threads.

Prints a markdown table. Needs the ``bench`` extra (stable-baselines3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings

import gymnasium as gym
import torch
from torch.utils.flop_counter import FlopCounterMode

import capgap.envs as E
from capgap.agents import FAMILIES, LADDER, build
from capgap.train.ppo import Args, train

ENV = "capgap/CheeseCorner-v0"
DIALS = {"size": 13, "max_steps": 256}
"""The 13×13 maze of the literature: where the ladder spans 10^3..10^6 parameters."""


def matmul_flops(seconds: float = 2.0, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - t0)


def flops_per_sample(size: int, epochs: int, family: str) -> float:
    """Training FLOPs per env step: a rollout forward plus forward+backward per update epoch."""
    net = build(ENV, size, family, **DIALS)
    obs = torch.zeros((256, *E.observation_space(E.task_class(ENV)(**DIALS)).shape), dtype=torch.uint8)
    with FlopCounterMode(display=False) as fwd:
        net(obs)
    with FlopCounterMode(display=False) as both:
        logits, value = net(obs)
        (logits.sum() + value.sum()).backward()
    return (fwd.get_total_flops() + epochs * both.get_total_flops()) / len(obs)


def capgap_sps(size: int, iterations: int, threads: int, family: str) -> float:
    """Training steps/s of a run of ``iterations`` PPO iterations, after a 2-iteration warm-up run
    (as SB3 gets a warm-up ``learn``): the process's one-time costs are not the run's."""
    defaults = Args()
    batch = defaults.num_envs * defaults.num_steps
    sps = 0.0
    for n in (2, iterations):
        with tempfile.TemporaryDirectory() as out:
            run = train(Args(rung=str(size), family=family, total_steps=batch * n, eval_every=10**12,
                             eval_episodes=8, out=out, threads=threads, progress=False,
                             dials=tuple(f"{k}={v}" for k, v in DIALS.items())))
            sps = json.loads((run / "done.json").read_text())["train_sps"]
    return sps


def sb3_sps(size: int, family: str, equal_work: bool, iterations: int = 1) -> float:
    """SB3 PPO steps/s on the same network: its defaults, or capgap's batch settings."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    ours = build(ENV, size, family, **DIALS)

    class Trunk(BaseFeaturesExtractor):
        def __init__(self, space: gym.spaces.Box) -> None:
            super().__init__(space, ours.pi.in_features)
            self.trunk = ours.trunk

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            # SB3 already scales uint8 Box observations to [0, 1]; same memory layout as ours
            if family == "conv":
                obs = obs.contiguous(memory_format=torch.channels_last)
            return self.trunk(obs)

    a = Args()
    n_envs = 16 if equal_work else 8
    venv = make_vec_env(lambda: gym.make(ENV, **DIALS), n_envs=n_envs)
    kwargs = {}
    if equal_work:
        batch = a.num_envs * a.num_steps
        kwargs = {"n_steps": batch // n_envs, "batch_size": batch // a.num_minibatches,
                  "n_epochs": a.update_epochs, "learning_rate": a.lr}
    model = PPO("CnnPolicy", venv, verbose=0, device="cpu", **kwargs,
                policy_kwargs={"features_extractor_class": Trunk, "net_arch": [], "normalize_images": True,
                               "ortho_init": False})  # the trunk comes initialised as ours (orthogonal)
    per_iteration = model.n_steps * n_envs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(total_timesteps=per_iteration)  # warm-up rollout + update
        t0 = time.perf_counter()
        model.learn(total_timesteps=per_iteration * iterations, reset_num_timesteps=False)
    return per_iteration * iterations / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both libraries")
    p.add_argument("--iterations", type=int, default=24,
                   help="capgap PPO iterations per rung (4096 steps each; a third of it above rung 3)")
    p.add_argument("--sb3-max-rung", type=int, default=3, help="largest rung to time SB3 on (it is slow)")
    p.add_argument("--family", default="conv", choices=FAMILIES, help="network family")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mm = matmul_flops()
    epochs = Args().update_epochs
    dials = " ".join(f"{k}={v}" for k, v in DIALS.items())
    print(f"family: {a.family}; CheeseCorner {dials}; machine: {platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({a.threads} threads), "
          f"python {platform.python_version()}; fp32 matmul 1024²: {mm / 1e9:.1f} GFLOP/s\n")
    print("| rung | params | capgap steps/s | SB3 defaults steps/s | capgap / SB3 defaults "
          "| SB3 equal-work steps/s | capgap / SB3 equal work | train GFLOP/s | % of matmul |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (name, _) in enumerate(LADDER):
        params = build(ENV, i, a.family, **DIALS).num_params()
        ours = capgap_sps(i, a.iterations if i <= 3 else max(2, a.iterations // 3), a.threads, a.family)
        cells = []
        for equal_work in (False, True):
            torch.set_num_threads(a.threads)
            sb3 = sb3_sps(i, a.family, equal_work, 2 if equal_work else 1) if i <= a.sb3_max_rung else None
            cells += [f"{sb3:,.0f}", f"{ours / sb3:.1f}x"] if sb3 else ["n/a", "n/a"]
        flops = flops_per_sample(i, epochs, a.family) * ours
        print(f"| {i} {name} | {params:,} | {ours:,.0f} | {' | '.join(cells)} | {flops / 1e9:.1f} | "
              f"{100 * flops / mm:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
