"""End-to-end PPO training speed per ladder rung, against Stable-Baselines3 in the same run.

    python benchmarks/train_speed.py [--threads 2] [--iterations 6] [--sb3-steps 8192]

For every rung of the size ladder on CheeseCorner 13×13:

* **capgap**: ``capgap.train.ppo.train`` with its default batch (256 envs × 16 steps, 4 epochs
  of 8 minibatches), evaluation off; steps/s of rollout + update (``train_sps``).
* **SB3**: ``stable_baselines3.PPO`` on the same env through the gymnasium API (``DummyVecEnv``
  of 16 ``gymnasium.make`` envs), with the very same network (our conv trunk as SB3's features
  extractor, in the same memory layout, linear heads) and the same batch, epochs and minibatch
  size: the tool a user would otherwise pick.
* **FLOP/s**: FLOPs per training sample (counted by ``torch.utils.flop_counter`` on a forward
  and a backward pass: one forward in the rollout, forward + backward per epoch) × steps/s, as a
  fraction of a dense fp32 matmul's FLOP/s measured in the same run with the same threads.

Prints a markdown table. Needs the ``bench`` extra (stable-baselines3).
"""

from __future__ import annotations

import argparse
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
    net = build(ENV, size, family)
    obs = torch.zeros((256, *E.observation_space(E.task_class(ENV)()).shape), dtype=torch.uint8)
    with FlopCounterMode(display=False) as fwd:
        net(obs)
    with FlopCounterMode(display=False) as both:
        logits, value = net(obs)
        (logits.sum() + value.sum()).backward()
    return (fwd.get_total_flops() + epochs * both.get_total_flops()) / len(obs)


def capgap_sps(size: int, iterations: int, threads: int, family: str) -> float:
    a = Args()
    batch = a.num_envs * a.num_steps
    with tempfile.TemporaryDirectory() as out:
        run = train(Args(size=str(size), family=family, total_steps=batch * iterations, eval_every=10**12,
                         eval_episodes=8, out=out, threads=threads, progress=False))
        import json

        return json.loads((run / "done.json").read_text())["train_sps"]


def sb3_sps(size: int, steps: int, family: str) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    ours = build(ENV, size, family)

    class Trunk(BaseFeaturesExtractor):
        def __init__(self, space: gym.spaces.Box) -> None:
            super().__init__(space, ours.pi.in_features)
            self.trunk = build(ENV, size, family).trunk

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            # SB3 already scales uint8 Box observations to [0, 1]; same memory layout as ours
            if family == "conv":
                obs = obs.contiguous(memory_format=torch.channels_last)
            return self.trunk(obs)

    a = Args()
    n_envs = 16
    venv = make_vec_env(lambda: gym.make(ENV), n_envs=n_envs)
    model = PPO("CnnPolicy", venv, n_steps=a.num_envs * a.num_steps // n_envs, batch_size=a.num_envs * a.num_steps // 8,
                n_epochs=a.update_epochs, learning_rate=a.lr, verbose=0, device="cpu",
                policy_kwargs={"features_extractor_class": Trunk, "net_arch": [], "normalize_images": True,
                               "ortho_init": False})  # the trunk comes initialised as ours (orthogonal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(total_timesteps=a.num_envs * a.num_steps)  # warm-up rollout + update
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both libraries")
    p.add_argument("--iterations", type=int, default=6, help="capgap PPO iterations per rung (4096 steps each)")
    p.add_argument("--sb3-steps", type=int, default=8192, help="SB3 timed steps per rung")
    p.add_argument("--sb3-max-rung", type=int, default=3, help="largest rung to time SB3 on (it is slow)")
    p.add_argument("--family", default="conv", choices=FAMILIES, help="network family")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mm = matmul_flops()
    epochs = Args().update_epochs
    print(f"family: {a.family}; machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({a.threads} threads), "
          f"python {platform.python_version()}; fp32 matmul 1024²: {mm / 1e9:.1f} GFLOP/s\n")
    print("| rung | params | capgap steps/s | SB3 steps/s | capgap / SB3 | train GFLOP/s | % of matmul |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for i, (name, _) in enumerate(LADDER):
        params = build(ENV, i, a.family).num_params()
        ours = capgap_sps(i, a.iterations if i <= 3 else max(2, a.iterations // 3), a.threads, a.family)
        torch.set_num_threads(a.threads)
        sb3 = sb3_sps(i, a.sb3_steps, a.family) if i <= a.sb3_max_rung else float("nan")
        flops = flops_per_sample(i, epochs, a.family) * ours
        ratio = f"{ours / sb3:.1f}x" if sb3 == sb3 else "n/a"
        sb3_cell = f"{sb3:,.0f}" if sb3 == sb3 else "n/a"
        print(f"| {i} {name} | {params:,} | {ours:,.0f} | {sb3_cell} | {ratio} | {flops / 1e9:.1f} | "
              f"{100 * flops / mm:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
