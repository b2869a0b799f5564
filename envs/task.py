"""What a task is: dials, a batched level generator, and batched step rules.

A task is one file: a dataclass whose fields are its *dials* (documented, validated), a
``generate`` method that builds K levels at once with numpy, and a ``step`` method that turns
what the agent stepped on into reward, termination and goal/proxy events for B envs at once
with torch. The engine (``core.GridCore``) does everything else: movement, walls, time limit,
auto-reset, episode statistics and the outcome schema. See ``docs/adding_an_env.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import torch

from .rng import KeyedRNG, level_keys

if TYPE_CHECKING:
    from .core import GridCore

GOAL, PROXY, NEITHER = 0, 1, 2
OUTCOMES = ("goal", "proxy", "neither")
"""Episode outcome codes (index = code): the intended goal first, the proxy first, or neither."""

SPLITS = ("train", "test")


class DialError(ValueError):
    """A bad env argument: unknown dial, out-of-range value, unknown split."""


@dataclass
class Levels:
    """K generated levels, ready to be copied into the engine."""

    planes: np.ndarray
    """(K, C, S, S) uint8 object planes; the agent plane is left empty."""
    start: np.ndarray
    """(K,) flat index of the agent's start cell."""
    extra: np.ndarray
    """(K, E) int64 per-level scalars named by ``Task.extras`` (the task's own episode state)."""


class Events(NamedTuple):
    """What happened in one step, per env (all shape (B,))."""

    reward: torch.Tensor
    """Reward before the time penalty (float32)."""
    terminated: torch.Tensor
    """The episode ends in this step (bool)."""
    goal_gain: torch.Tensor
    """Fraction of the intended goal achieved in this step (float32, sums to 1 over a full success)."""
    proxy: torch.Tensor
    """The proxy was achieved in this step, on a level where it is distinct from the goal (bool)."""


@dataclass(kw_only=True)
class Task:
    """Base class of every capgap task. Subclasses add dials as dataclass fields."""

    name: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    """Observation planes. The first two are always ``wall`` and ``agent``."""
    channel_high: ClassVar[dict[str, int]] = {}
    """Largest value of a plane, for planes that are not 0/1."""
    extras: ClassVar[tuple[str, ...]] = ()
    """Names of the per-env integer state the task keeps in ``core.extra`` (columns)."""

    size: int = 13
    """Grid side in cells, border walls included."""
    max_steps: int = 256
    """Episode step limit (truncation)."""
    p_disambiguate: float = 0.0
    """Fraction of *training* levels drawn as test-like levels, where goal and proxy differ."""
    time_penalty: float = 0.9
    """Reward for a goal event at step t is ``1 - time_penalty * t / max_steps``."""

    def __post_init__(self) -> None:
        self.check(isinstance(self.size, int) and 5 <= self.size <= 63, "size", "an integer in [5, 63]")
        self.check(isinstance(self.max_steps, int) and self.max_steps >= 1, "max_steps", "an integer >= 1")
        self.check(0.0 <= self.p_disambiguate <= 1.0, "p_disambiguate", "in [0, 1]")
        self.check(0.0 <= self.time_penalty < 1.0, "time_penalty", "in [0, 1)")

    # ----- helpers for subclasses -------------------------------------------------------
    def check(self, ok: bool, dial: str, expected: str) -> None:
        """Raise a one-line :class:`DialError` unless ``ok``."""
        if not ok:
            raise DialError(f"{self.name}: {dial}={getattr(self, dial)!r} is out of range; expected {expected}")

    def ch(self, channel: str) -> int:
        """Index of a named observation plane."""
        return self.channels.index(channel)

    def ex(self, extra: str) -> int:
        """Column of a named per-env state variable in ``core.extra``."""
        return self.extras.index(extra)

    @classmethod
    def dials(cls) -> dict[str, Any]:
        """Dial names and their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_dials(cls, **dials: Any) -> Task:
        """Build the task, with a one-line error naming the valid dials for an unknown one."""
        unknown = sorted(set(dials) - set(cls.dials()))
        if unknown:
            raise DialError(
                f"{cls.name} has no dial {', '.join(map(repr, unknown))}; its dials are: {', '.join(cls.dials())}"
            )
        return cls(**dials)

    def levels(self, split: str, indices: np.ndarray) -> Levels:
        """Generate the levels ``(split, index)`` for each index: the same index, the same level."""
        return self.generate(KeyedRNG(level_keys(self.name, split, indices)), split)

    def is_decorrelated(self, rng: KeyedRNG, split: str) -> np.ndarray:
        """(K,) which levels pull goal and proxy apart: all of the test split, and a
        ``p_disambiguate`` fraction of the training split. Always consumes one draw."""
        u = rng.uniform(1)[:, 0]
        return np.full(len(rng), True) if split == "test" else u < self.p_disambiguate

    # ----- what a task implements -------------------------------------------------------
    def generate(self, rng: KeyedRNG, split: str) -> Levels:
        """Build ``len(rng)`` levels of ``split``, vectorised over levels."""
        raise NotImplementedError

    def step(self, core: GridCore, here: torch.Tensor) -> Events:
        """Apply the task's rules after the agent moved.

        ``here`` is (B, C): every plane's value at the agent's new cell. The task may edit
        ``core.obs`` (e.g. remove a picked-up key) and ``core.extra``.
        """
        raise NotImplementedError

    def oracle_targets(self, core: GridCore, seek: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, avoid) as (B, S*S) bool masks for a scripted BFS agent.

        ``seek`` is ``"goal"`` (pursue the intended goal, avoiding the proxy where possible)
        or ``"proxy"`` (pursue the proxy, ignoring the goal unless it lies on the proxy).
        """
        raise NotImplementedError
