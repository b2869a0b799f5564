"""Playing episodes for inspection: one episode of a policy on each of N named levels of a split,
all in one batched engine, with what was recorded along the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from capgap.envs import make_core
from capgap.envs.core import play_first_episodes
from capgap.eval.inspect.common import Policy
from capgap.eval.inspect.record import Recorder
from capgap.eval.rollout import EVAL_SEED_BASE


@dataclass
class Played:
    """One episode on each of N levels of a split, and what was recorded along the way.

    Activations are rows: ``acts[layer][r]`` was recorded in episode ``row_episode[r]`` at its
    step ``row_t[r]`` (0 = the episode's first observation), before the action of that step.
    """

    env_id: str
    split: str
    dials: dict[str, Any]
    level: np.ndarray
    """(N,) level indices."""
    outcome: np.ndarray
    """(N,) outcome codes (``capgap.envs.OUTCOMES``)."""
    goal_score: np.ndarray
    first_obs: np.ndarray = field(repr=False)
    """(N, C, S, S) uint8: each level's first observation."""
    paths: np.ndarray = field(repr=False)
    """(N, T + 1) the agent's cell (flat index) at each step, start included; -1 after the episode ended."""
    acts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    row_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    row_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def first(self, layer: str) -> torch.Tensor:
        """(N, D) the layer's activations at each episode's first step, in episode order."""
        rows = np.flatnonzero(self.row_t == 0)
        order = np.argsort(self.row_episode[rows], kind="stable")
        return self.acts[layer][torch.as_tensor(rows[order])]

    @property
    def A(self) -> float:
        return float(self.goal_score.mean())


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def play(policy: Policy, env_id: str, split: str, level_indices: np.ndarray, dials: dict[str, Any],
         seed: int = 0, recorder: Recorder | None = None, every_step: bool = False,
         greedy: bool = False) -> Played:
    """One episode of ``policy`` on each level of ``level_indices`` (all in one batched engine).

    Actions are sampled from the policy's softmax with a generator seeded ``seed`` (or its argmax
    if ``greedy``). With a ``recorder`` (whose hooks sit on ``policy``'s network), each layer's
    output is kept at every episode's first step, or at every step an episode is alive if
    ``every_step``.
    """
    level_indices = np.asarray(level_indices, dtype=np.int64)
    n = len(level_indices)
    core = make_core(env_id, n, split=split, autoreset=False, **dials)
    core.reset(EVAL_SEED_BASE + np.arange(n), level_indices=level_indices)
    gen = torch.Generator().manual_seed(seed)
    first_obs = core.obs.clone().numpy()
    paths = torch.full((n, core.task.max_steps + 1), -1, dtype=torch.long)
    paths[:, 0] = core.pos
    chunks: dict[str, list[torch.Tensor]] = {}
    rows_e: list[torch.Tensor] = []
    rows_t: list[int] = []

    def act(t: int, alive: torch.Tensor) -> torch.Tensor:
        logits = _logits(policy(core.obs))
        if recorder is not None and (every_step or t == 0):
            idx = alive.nonzero().squeeze(1)
            for name, value in recorder.last.items():
                chunks.setdefault(name, []).append(value[idx].clone())
            rows_e.append(idx)
            rows_t.extend([t] * len(idx))
        if greedy:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen).squeeze(1)

    def after(t: int, alive: torch.Tensor) -> None:
        paths[alive, t + 1] = core.pos[alive]

    out = play_first_episodes(core, act, after)
    return Played(
        env_id=env_id, split=split, dials=dict(dials), level=out["level"], outcome=out["outcome"].astype(np.int8),
        goal_score=out["goal_score"].astype(np.float32), first_obs=first_obs, paths=paths.numpy(),
        acts={k: torch.cat(v) for k, v in chunks.items()},
        row_episode=torch.cat(rows_e).numpy() if rows_e else np.zeros(0, dtype=np.int64),
        row_t=np.asarray(rows_t, dtype=np.int64),
    )


def observe(env_id: str, split: str, level_indices: np.ndarray, dials: dict[str, Any]) -> np.ndarray:
    """(N, C, S, S) uint8: the first observation of each level, exactly as :func:`play` would see it,
    without playing (what the probes need of levels whose outcome does not matter)."""
    level_indices = np.asarray(level_indices, dtype=np.int64)
    core = make_core(env_id, len(level_indices), split=split, autoreset=False, **dials)
    core.reset(EVAL_SEED_BASE + np.arange(len(level_indices)), level_indices=level_indices)
    return core.obs.clone().numpy()


def scripted_policy(env_id: str, seek: str, **dials: Any) -> Policy:
    """The BFS oracle of ``capgap.envs.oracle`` as a policy (observation -> logits): it seeks
    ``"goal"`` or ``"proxy"`` on test-like levels. A yardstick: A_ds is 1 for the goal-seeker
    and 0 for the proxy-seeker."""
    from types import SimpleNamespace

    from capgap.envs import oracle, task_class
    from capgap.envs.task import View

    task = task_class(env_id).from_dials(**dials)
    s = task.size

    def policy(obs: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        pos = obs[:, 1].reshape(b, -1).argmax(1)
        extra = torch.ones((b, len(task.extras)), dtype=torch.long)  # the proxy is active (test-like)
        view = View(task.channels, obs.clone(), pos, extra)
        core = SimpleNamespace(task=task, view=view, size=s, num_envs=b, pos=pos,
                               move=torch.tensor([-s, 1, s, -1]), plane=view.plane)
        actions = oracle.act(core, seek)
        return torch.nn.functional.one_hot(actions, 4).float() * 50.0
    return policy
