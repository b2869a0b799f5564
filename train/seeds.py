"""Several seeds of one run configuration trained together: the plumbing beside ``ppo.py``'s flow.

``capgap.train.ppo.train_seeds`` trains S seeds of one configuration (same env, rung, dials and
hyperparameters; seeds, and a repair's source run, may differ) in one process: one engine of
S × ``num_envs`` envs, one :class:`~capgap.agents.stack.SeedStack` network, one optimizer.
Everything a *run* owns stays per seed, in the very format of a lone run:

* its run dir, TensorBoard file, evaluations, episode files, ``done.json``;
* its checkpoints: seed s's network, its slice of the Adam moments, its slice of the engine and
  its own random generator (:func:`save_checkpoints`), so a seed resumes alone or in any group,
  and every analysis tool reads it like any other run;
* what it plays: env i of seed s is seeded as in a lone run (``seed * 2**20 + i``), and level
  content depends on nothing else, so a seed meets the same levels grouped or alone;
* its init (built under ``torch.manual_seed(seed)``) and its random stream (a generator of its
  own for action sampling and minibatch order).

What differs from a lone run: floating-point rounding of the batched kernels, so trajectories
diverge after a while like two runs on different machines; the seed's results are the same in
distribution (``tests/test_seeds.py``: after two PPO iterations a grouped seed's network is its
lone run's within 1e-4; ``benchmarks/study_time.py``'s before/after runs compare C and A).
A grouped run's ``wall_s`` is the group's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from capgap import rundir
from capgap.agents.stack import SeedStack
from capgap.envs import CapgapError
from capgap.envs.core import GridCore

PER_SEED = ("seed", "name", "init_from")
"""``Args`` fields that may differ between the seeds of a group."""
ENV_STRIDE = 1 << 20
"""Env ``i`` of seed ``s`` is seeded ``s * ENV_STRIDE + i`` (as in a lone run)."""


@dataclass
class Run:
    """One seed of a group: its settings and where it lives."""

    args: Any  # capgap.train.ppo.Args
    config: dict[str, Any]
    run_dir: Path
    eval_dials: dict[str, dict[str, Any]]
    """Env dials of each split's evaluation levels (``rundir.split_dials``)."""


def shared(args: Iterable[Any]) -> None:
    """One-line error unless the runs may train as one group: equal in everything but ``PER_SEED``."""
    args = list(args)
    common = [{k: v for k, v in dataclasses.asdict(a).items() if k not in PER_SEED} for a in args]
    for a, c in zip(args[1:], common[1:], strict=True):
        diff = sorted(k for k in c if c[k] != common[0][k])
        if diff:
            raise CapgapError(f"seeds {args[0].seed} and {a.seed} cannot train as one group: they differ in "
                              f"{', '.join(diff)}; train them apart")
    seeds = [a.seed for a in args]
    if len(set(seeds)) != len(seeds):
        raise CapgapError(f"seeds {seeds} repeat; a group trains each seed once")


def resume_step(run_dir: Path) -> int:
    """The step a run resumes from (-1: it starts fresh): a group holds runs at one step."""
    path = rundir.latest_checkpoint(run_dir)
    return -1 if path is None else rundir.checkpoint_step(path)


def rewind(run_dirs: list[Path]) -> None:
    """Bring the seeds of a killed group back to one resume point: the latest step at which every
    one of them has a checkpoint (a kill can fall between the seeds' checkpoint writes). Newer
    checkpoints are removed; the group recomputes them. Without a common step, nothing changes
    (the seeds then train apart, each from its own checkpoint)."""
    steps = [{rundir.checkpoint_step(p) for p in rundir.checkpoints(d)} for d in run_dirs]
    common = set.intersection(*steps) if steps else set()
    if not common:
        return
    last = max(common)
    for d in run_dirs:
        for p in rundir.checkpoints(d):
            if rundir.checkpoint_step(p) > last:
                p.unlink()


# ----- the engine: S x N envs, sliced per seed -------------------------------------------------


def core_slice(state: dict[str, torch.Tensor], s: int, size: int) -> dict[str, torch.Tensor]:
    """Seed ``s``'s share of a group engine's ``state_dict`` (every tensor is env-major)."""
    out = {}
    for k, v in state.items():
        n, rem = divmod(v.shape[0], size)
        assert rem == 0, f"engine state {k} is not env-major: shape {tuple(v.shape)}"
        out[k] = v[s * n:(s + 1) * n].clone()
    return out


def core_join(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The group engine's state from its seeds' shares (inverse of :func:`core_slice`)."""
    return {k: torch.cat([st[k] for st in states]) for k in states[0]}


# ----- the optimizer: Adam's moments are elementwise, so each seed owns a slice ------------------


def optimizer_slice(state: dict[str, Any], s: int) -> dict[str, Any]:
    """Seed ``s``'s share of a stacked Adam ``state_dict``: loadable by Adam over one network."""
    per = {i: {k: (v if k == "step" else v[s]).clone() for k, v in st.items()} for i, st in state["state"].items()}
    return {"state": per, "param_groups": state["param_groups"]}


def optimizer_join(states: list[dict[str, Any]]) -> dict[str, Any]:
    """A stacked Adam ``state_dict`` from its seeds' shares (inverse of :func:`optimizer_slice`)."""
    first = states[0]["state"]
    joined = {i: {k: (v if k == "step" else torch.stack([st["state"][i][k] for st in states]))
                  for k, v in first[i].items()} for i in first}
    return {"state": joined, "param_groups": states[0]["param_groups"]}


# ----- checkpoints: one per seed, each in a lone run's format ---------------------------------


def save_checkpoints(runs: list[Run], agent: SeedStack, optimizer: torch.optim.Optimizer, core: GridCore,
                     rngs: list[torch.Generator], params: int, counters: dict[str, int]) -> None:
    """Checkpoint every seed of a group into its own run dir, as a lone run would: everything it
    needs to continue exactly, alone or in any group (``counters``: iteration, global_step, next_eval)."""
    core_state, opt_state = core.state_dict(), optimizer.state_dict()
    for s, r in enumerate(runs):
        rundir.save_checkpoint(r.run_dir, counters["global_step"], {
            "agent": agent.state_of(s), "optimizer": optimizer_slice(opt_state, s),
            "core": core_slice(core_state, s, len(runs)), "torch_rng": rngs[s].get_state(), **counters,
            "params": params, "config": r.config})


def load_checkpoints(runs: list[Run], agent: SeedStack, optimizer: torch.optim.Optimizer, core: GridCore,
                     rngs: list[torch.Generator]) -> tuple[int, int, int]:
    """Restore a group from its seeds' latest checkpoints (all at one step); returns
    (iteration, global_step, next_eval). Evaluations logged after that step are forgotten."""
    ckpts = []
    for s, r in enumerate(runs):
        path = rundir.latest_checkpoint(r.run_dir)
        assert path is not None, f"{r.run_dir} has no checkpoint to resume from"
        ckpt = rundir.load_checkpoint(path, agent.network(s))  # checks it holds this run's network
        agent.load_state_of(s, ckpt["agent"])
        rngs[s].set_state(ckpt["torch_rng"])
        ckpts.append(ckpt)
    counters = {(c["iteration"], c["global_step"], c["next_eval"]) for c in ckpts}
    if len(counters) != 1:
        raise CapgapError(f"the seeds of {runs[0].run_dir.name} stopped at different points {sorted(counters)}; "
                          "train them apart")
    optimizer.load_state_dict(optimizer_join([c["optimizer"] for c in ckpts]))
    core.load_state_dict(core_join([c["core"] for c in ckpts]))
    iteration, global_step, next_eval = counters.pop()
    for r in runs:
        rundir.trim_evals(r.run_dir, global_step)
    return iteration, global_step, next_eval
