"""The two gymnasium faces of the engine: a single ``Env`` and a natively batched ``VectorEnv``.

Both wrap :class:`~capgap.envs.core.GridCore`; every task is written once, as a ``Task``.

* ``gymnasium.make("capgap/CheeseCorner-v0", split="test")`` gives a :class:`CapgapEnv`.
* ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` gives a
  :class:`CapgapVectorEnv` (same-step auto-reset, one torch step for all N envs).
* ``capgap.envs.make_core(id, num_envs=N)`` gives the engine itself: torch tensors in and out,
  no numpy round trip, which is what the trainer uses.

Common arguments (beside the task's own dials):
    split: ``"train"`` (goal and proxy coincide) or ``"test"`` (they are pulled apart).
    num_levels: 0 = unlimited fresh levels; N = the fixed set of levels 0..N-1 (procgen-style).
    obs_mode: ``"grid"`` (all of the grid, one uint8 plane per object kind) or
        ``"egocentric"`` (a view_size × view_size window centred on the agent).
    view_size: side of the egocentric window (odd).
    render_mode: ``"rgb_array"`` (frames for videos) or ``"ansi"`` (a text grid).
    device: torch device of the engine's state.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from . import render
from .core import ACTIONS, GridCore
from .errors import DialError
from .task import OUTCOMES, Task

OBS_MODES = ("grid", "egocentric")
RENDER_MODES = ("rgb_array", "ansi")
_ACTIONS_TEXT = f"0..{len(ACTIONS) - 1} ({', '.join(ACTIONS)})"


def _check_face(obs_mode: str, view_size: int, render_mode: str | None) -> None:
    if obs_mode not in OBS_MODES:
        raise DialError(f"unknown obs_mode {obs_mode!r}; expected one of {', '.join(OBS_MODES)}")
    if not (isinstance(view_size, int) and view_size >= 3 and view_size % 2 == 1):
        raise DialError(f"view_size={view_size!r} is out of range; expected an odd integer >= 3")
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise DialError(f"unknown render_mode {render_mode!r}; expected one of {', '.join(RENDER_MODES)}")


def observation_space(task: Task, obs_mode: str = "grid", view_size: int = 5) -> gym.spaces.Box:
    """The Box of one env's observation: (C, S, S) or (C, k, k) uint8 planes."""
    side = task.size if obs_mode == "grid" else view_size
    high = np.array([task.channel_high.get(c, 1) for c in task.channels], dtype=np.uint8)
    high = np.broadcast_to(high[:, None, None], (len(high), side, side)).copy()
    return gym.spaces.Box(low=0, high=high, dtype=np.uint8)


def unseen_of(core: GridCore, n: int = 1) -> list[dict[str, np.ndarray]]:
    """The first ``n`` envs' ``Task.unseen`` cells as (S, S) numpy masks, for drawing (one call
    of the task for all of them)."""
    s = core.size
    unseen = {name: cells[:n].reshape(-1, s, s).cpu().numpy() for name, cells in core.task.unseen(core.view).items()}
    return [{name: cells[i] for name, cells in unseen.items()} for i in range(n)]


class _Face:
    """What both faces share: the core, the observation view and rendering."""

    core: GridCore
    obs_mode: str
    view_size: int
    render_mode: str | None

    def _observe(self) -> torch.Tensor:
        return self.core.obs if self.obs_mode == "grid" else self.core.egocentric(self.view_size)

    def _frame(self, i: int, unseen: dict[str, np.ndarray]) -> np.ndarray | str:
        planes = self.core.obs[i].cpu().numpy()
        if self.render_mode == "ansi":
            return render.text(planes, self.core.task.channels, unseen)
        return render.rgb(planes, self.core.task.channels, unseen=unseen)


class CapgapEnv(_Face, gym.Env):
    """One environment of a capgap task (a view on a one-env engine). See the module docstring."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 8}

    def __init__(self, task_cls: type[Task], split: str = "train", num_levels: int = 0, obs_mode: str = "grid",
                 view_size: int = 5, render_mode: str | None = None, device: str = "cpu", **dials: Any) -> None:
        _check_face(obs_mode, view_size, render_mode)
        self.task = task_cls.from_dials(**dials)
        self.core = GridCore(self.task, 1, split, num_levels, device, autoreset=False)
        self.obs_mode, self.view_size, self.render_mode = obs_mode, view_size, render_mode
        self.observation_space = observation_space(self.task, obs_mode, view_size)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self._seeded = False
        self._over = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode. ``seed`` restarts the env's level stream; without it the env plays
        the next level of its stream. ``options={"level": i}`` plays level i of the split."""
        super().reset(seed=seed)
        level = (options or {}).get("level")
        if seed is not None or not self._seeded or level is not None:
            s = seed if seed is not None else int(self.np_random.integers(2**62))
            self.core.reset(np.array([s]), None if level is None else np.array([level]))
            self._seeded = True
        else:
            self.core.reset_done(torch.zeros(1, dtype=torch.long, device=self.core.device))
        self._over = False
        return self._observe()[0].cpu().numpy().copy(), {"level": int(self.core.level[0])}

    def step(self, action: int):
        if self._over:
            raise gym.error.ResetNeeded("the episode is over: call reset() before step()")
        if not 0 <= int(action) < len(ACTIONS):
            raise ValueError(f"action {action!r} is not one of {_ACTIONS_TEXT}")
        a = torch.as_tensor([int(action)], device=self.core.device)
        reward, terminated, truncated = self.core.step(a)
        term, trunc = bool(terminated[0]), bool(truncated[0])
        info: dict[str, Any] = {}
        if term or trunc:
            self._over = True
            e = self.core.episodes
            info = {
                "outcome": OUTCOMES[int(e.outcome[0])],
                "goal_score": float(e.goal_score[0]),
                "capability_score": float(e.capability_score[0]),
                "return": float(e.ret[0]),
                "length": int(e.length[0]),
                "level": int(e.level[0]),
            }
        return self._observe()[0].cpu().numpy().copy(), float(reward[0]), term, trunc, info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'ansi'")
            return None
        return self._frame(0, unseen_of(self.core)[0])


class CapgapVectorEnv(_Face, VectorEnv):
    """N environments of a capgap task stepped as one batch (same-step auto-reset).

    When env i finishes in a step, the returned observation is the first of its next
    episode, ``info["final_obs"][i]`` is its last one, and ``info`` carries the finished
    episode's statistics under ``info["episode"]`` (``r``, ``l``, ``outcome``, ``goal_score``,
    ``capability_score``, ``level``) with the mask ``info["_episode"]``. Outcome codes index
    ``capgap.envs.OUTCOMES``.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 8, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task_cls: type[Task], num_envs: int, split: str = "train", num_levels: int = 0,
                 obs_mode: str = "grid", view_size: int = 5, render_mode: str | None = None, device: str = "cpu",
                 copy: bool = True, **dials: Any) -> None:
        _check_face(obs_mode, view_size, render_mode)
        self.task = task_cls.from_dials(**dials)
        self.core = GridCore(self.task, num_envs, split, num_levels, device, autoreset=False)
        self.obs_mode, self.view_size, self.render_mode, self.copy = obs_mode, view_size, render_mode, copy
        self.num_envs = num_envs
        self.single_observation_space = observation_space(self.task, obs_mode, view_size)
        self.single_action_space = gym.spaces.Discrete(len(ACTIONS))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._seed_base: int | None = None

    def _np(self, t: torch.Tensor) -> np.ndarray:
        a = t.cpu().numpy()
        return a.copy() if self.copy and t.device.type == "cpu" else a

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset all envs; env i gets ``seed + i`` (or ``seed[i]``), as gymnasium's vector envs do.
        ``options={"levels": [...]}`` plays those level indices first."""
        super().reset(seed=seed if isinstance(seed, int) or seed is None else None)
        if seed is None:
            seeds = self.np_random.integers(2**62, size=self.num_envs)
        elif isinstance(seed, int):
            seeds = seed + np.arange(self.num_envs)
        else:
            seeds = np.asarray(seed)
        levels = (options or {}).get("levels")
        self.core.reset(seeds, None if levels is None else np.asarray(levels))
        return self._np(self._observe()), {"level": self.core.level.cpu().numpy().copy()}

    def step(self, actions):
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or (a < 0).any() or (a >= len(ACTIONS)).any():
            raise ValueError(f"actions must be {self.num_envs} integers in {_ACTIONS_TEXT}; got {a!r}")
        a = torch.as_tensor(a, device=self.core.device)
        reward, terminated, truncated = self.core.step(a)
        info: dict[str, Any] = {}
        done = self.core.episodes.done
        ids = done.nonzero().squeeze(1)
        if len(ids):
            e = self.core.episodes
            mask = done.cpu().numpy()
            final = self._observe()[ids].cpu().numpy()
            info["final_obs"] = np.full(self.num_envs, None, dtype=object)
            for k, i in enumerate(ids.tolist()):
                info["final_obs"][i] = final[k]
            info["_final_obs"] = mask
            info["episode"] = {
                "r": e.ret.cpu().numpy().copy(), "l": e.length.cpu().numpy().copy(),
                "outcome": e.outcome.cpu().numpy().copy(), "goal_score": e.goal_score.cpu().numpy().copy(),
                "capability_score": e.capability_score.cpu().numpy().copy(), "level": e.level.cpu().numpy().copy(),
            }
            info["_episode"] = mask
            self.core.reset_done(ids)
        return (self._np(self._observe()), reward.cpu().numpy(), terminated.cpu().numpy(),
                truncated.cpu().numpy(), info)

    def render(self):
        """A tuple of frames (or text grids), one per env, for at most the first 16 envs."""
        if self.render_mode is None:
            return None
        n = min(self.num_envs, 16)
        return tuple(self._frame(i, unseen) for i, unseen in enumerate(unseen_of(self.core, n)))
