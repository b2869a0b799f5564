"""capgap environments: gridworlds where an intended goal and a proxy coincide in training and
part at test time. Importing this package registers them with gymnasium::

    import gymnasium as gym
    import capgap.envs

    env = gym.make("capgap/CheeseCorner-v0", split="test")
    venv = gym.make_vec("capgap/CheeseCorner-v0", num_envs=1024, vectorization_mode="vector_entry_point")
    core = capgap.envs.make_core("capgap/CheeseCorner-v0", num_envs=4096)   # torch, for training

Registration lives here and only here: per task, its import and its line in ``TASKS``. Every
other fact about an env (its training budget, whether it is a control, what the inspection tools
can probe, its pinned digests, what the red team may mutate in its levels) is a class attribute in
the task's own file (``Task.budget``, ..., ``Task.mutations``).
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

from .cheese_corner import CheeseCorner
from .cheese_dish import CheeseDish
from .colour_shape import ColourShape
from .core import ACTIONS, Episodes, GridCore
from .env import CapgapEnv, CapgapVectorEnv, observation_space
from .errors import CapgapError, DialError, InspectError, RunError, UsageError
from .follow_leader import FollowLeader
from .keys_chests import KeysChests
from .lava_shift import LavaShift
from .monster_shields import MonsterShields
from .task import (
    GOAL,
    NEITHER,
    OUTCOMES,
    PROXY,
    SPLITS,
    Events,
    Levels,
    Task,
    View,
    format_dials,
    parse_dials,
)

TASKS: dict[str, type[Task]] = {
    "capgap/CheeseCorner-v0": CheeseCorner,
    "capgap/CheeseDish-v0": CheeseDish,
    "capgap/ColourShape-v0": ColourShape,
    "capgap/FollowLeader-v0": FollowLeader,
    "capgap/KeysChests-v0": KeysChests,
    "capgap/LavaShift-v0": LavaShift,
    "capgap/MonsterShields-v0": MonsterShields,
}
"""Every registered env id and its task. Register a new task here (and import it above)."""

DEFAULT_ENV = "capgap/CheeseCorner-v0"



def register(env_id: str, task: type[Task]) -> None:
    """Make ``task`` the env ``env_id``: in ``TASKS`` (capgap's registry: ``capgap train --env``, the
    test suite's parametrised checks) and in gymnasium's (``gym.make``, ``gym.make_vec``). The
    package registers every task of ``TASKS`` on import; call it yourself for a task defined
    elsewhere (a notebook, a plug-in) instead of editing ``TASKS``."""
    TASKS[env_id] = task
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=functools.partial(CapgapEnv, task),
                     vector_entry_point=functools.partial(CapgapVectorEnv, task), disable_env_checker=False)


for _id, _task in list(TASKS.items()):
    register(_id, _task)


def task_class(env_id: str) -> type[Task]:
    """The task of a registered env id, with a one-line error for an unknown one."""
    try:
        return TASKS[env_id]
    except KeyError:
        raise DialError(f"unknown env {env_id!r}; registered envs: {', '.join(TASKS)}") from None


def make_core(env_id: str, num_envs: int, split: str = "train", num_levels: int = 0, device: str = "cpu",
              autoreset: bool = True, **dials: Any) -> GridCore:
    """The batched torch engine of a registered env (the trainer's zero-copy path)."""
    return GridCore(task_class(env_id).from_dials(**dials), num_envs, split, num_levels, device, autoreset)


def describe(env_id: str) -> list[str]:
    """``capgap envs``: an env's summary, observation planes, training budget and dials, as lines."""
    import dataclasses

    cls = task_class(env_id)
    summary = (cls.__doc__ or "").strip().splitlines()[0]
    return [f"{env_id}{'  (control)' if cls.control else ''}", f"  {summary}",
            f"  planes: {', '.join(cls.channels)}", f"  budget: {cls.budget:,} env steps (the default --total-steps)",
            "  dials:  " + ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))]


__all__ = [
    "ACTIONS",
    "DEFAULT_ENV",
    "GOAL",
    "NEITHER",
    "OUTCOMES",
    "PROXY",
    "SPLITS",
    "TASKS",
    "CapgapEnv",
    "CapgapError",
    "CapgapVectorEnv",
    "CheeseCorner",
    "CheeseDish",
    "ColourShape",
    "DialError",
    "Episodes",
    "Events",
    "FollowLeader",
    "GridCore",
    "InspectError",
    "KeysChests",
    "LavaShift",
    "Levels",
    "MonsterShields",
    "RunError",
    "Task",
    "UsageError",
    "View",
    "describe",
    "format_dials",
    "make_core",
    "observation_space",
    "parse_dials",
    "register",
    "task_class",
]
