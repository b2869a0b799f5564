"""What a task is: dials, a batched level generator, and batched step rules.

A task is one file: a dataclass whose fields are its *dials* (documented, type- and
range-checked), a ``generate`` method that builds K levels at once with numpy, and a ``step``
method that turns what the agent stepped on into reward, termination and goal/proxy events for B
envs at once with torch. The engine (``core.GridCore``) does everything else: movement, walls,
time limit, auto-reset, episode statistics and the outcome schema. A task never sees the engine
itself, only a :class:`View` of it (planes, position, its own per-env state, "clear this plane
under the agent"), so it can be unit-tested on a hand-made ``View`` with no engine at all. See
``docs/adding_an_env.md``.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .errors import DialError
from .mutations import Rules
from .rng import KeyedRNG, level_keys

GOAL, PROXY, NEITHER = 0, 1, 2
OUTCOMES = ("goal", "proxy", "neither")
"""Episode outcome codes (index = code): the intended goal first, the proxy first, or neither."""

SPLITS = ("train", "test")


@dataclass
class Levels:
    """K generated levels, ready to be copied into the engine."""

    planes: np.ndarray
    """(K, C, S, S) uint8 object planes; the agent plane is left empty."""
    start: np.ndarray
    """(K,) flat index of the agent's start cell."""
    extra: np.ndarray
    """(K, E) int64 per-level scalars named by ``Task.extras`` (the task's own episode state)."""
    apart: np.ndarray | None = None
    """(K,) bool: which levels pull goal and proxy apart (``Task.is_decorrelated``'s answer), when the
    task asked (set by ``Task.levels``; None for a task that never asks, e.g. a control)."""


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


def parse_dials(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["size=9", "p_disambiguate=0.1"]`` -> ``{"size": 9, "p_disambiguate": 0.1}``: the one place
    where dial strings (command line, ``config.json``) become values. A value that is not a Python
    literal stays a string (and the task's type check names it)."""
    import ast

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise DialError(f"malformed dial {pair!r}; write it as name=value, e.g. p_disambiguate=0.1")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def format_dials(dials: dict[str, Any]) -> str:
    """``{"size": 9, "p_disambiguate": 0.10}`` -> ``"p_disambiguate=0.1,size=9"``: one spelling per setting."""
    return ",".join(f"{k}={v}" for k, v in sorted(dials.items()))


def read_flat(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``flat[index]`` for an index of any shape, by ``index_select`` (~3x faster than advanced
    indexing on the CPU). The engine and :class:`View` read cells through it."""
    return flat.index_select(0, index.reshape(-1)).view(index.shape)


class View:
    """What a task sees of B envs of the engine: the planes, the agent's cell, the task's own
    per-env state, and the few writes a task may make. Every tensor has B rows.

    The engine builds one and keeps it current; a test can build one from hand-made tensors::

        view = View(("wall", "agent", "key"), obs, pos, extra)

    Args:
        channels: the task's plane names (``Task.channels``), in order.
        obs: (B, C, S, S) uint8 observation planes (written in place by :meth:`clear_here`,
            :meth:`clear_under`, :meth:`fill`, :meth:`put`, :meth:`redraw`).
        pos: (B,) long flat index ``y * S + x`` of each agent's cell.
        extra: (B, E) long per-env state, columns named by ``Task.extras``; the task edits it in place.
    """

    def __init__(self, channels: tuple[str, ...], obs: torch.Tensor, pos: torch.Tensor, extra: torch.Tensor) -> None:
        self.channels, self.obs, self.extra = channels, obs, extra
        b, c, s, _ = obs.shape
        self.num_envs, self.size, self.device = b, s, obs.device
        self._hw = s * s
        first = torch.arange(b, device=obs.device) * (c * self._hw)  # flat offset of env i's first plane
        self._planes = torch.arange(c, device=obs.device).unsqueeze(1) * self._hw + first  # (C, B) plane starts
        self.pos = pos

    @property
    def pos(self) -> torch.Tensor:
        """(B,) long flat index ``y * S + x`` of each agent's cell."""
        return self._pos

    @pos.setter
    def pos(self, pos: torch.Tensor) -> None:
        self._pos, self._under = pos, None

    def under(self) -> torch.Tensor:
        """(C, B) flat index into ``obs`` of every plane's cell under each agent (row k: plane k),
        computed once per agent move: the engine reads ``here`` through it, and the writes under
        the agent reuse it."""
        if self._under is None:
            self._under = self._planes + self._pos
        return self._under

    def channel(self, name: str) -> int:
        """Index of the plane ``name``."""
        return self.channels.index(name)

    def plane(self, name: str) -> torch.Tensor:
        """(B, S*S) view of the plane ``name`` (read it; write it through :meth:`clear_here`,
        :meth:`clear_under`, :meth:`fill`, :meth:`put` or :meth:`redraw`)."""
        return self.obs[:, self.channel(name)].reshape(self.num_envs, -1)

    def clear_here(self, name: str, where: torch.Tensor) -> None:
        """Set the plane ``name`` to 0 under the agent in the envs where ``where`` (B,) bool is
        True, e.g. a picked-up key. The other envs' cells are left as they are."""
        cell = self.under()[self.channel(name)]
        flat = self.obs.view(-1)
        flat.scatter_(0, cell, read_flat(flat, cell) & (~where).to(torch.uint8))  # scatter_: ~4x cheaper

    def clear_under(self, *names: str) -> None:
        """Set the planes ``names`` to 0 under the agent in every env: what the agent stands on is
        always taken (an apple, a shield), so no mask is needed (cheaper than :meth:`clear_here`)."""
        cells = self.under()[[self.channel(n) for n in names]]
        self.obs.view(-1).index_fill_(0, cells.reshape(-1), 0)

    def fill(self, name: str, ids: torch.Tensor | None, values: torch.Tensor) -> None:
        """Fill the whole plane ``name`` of envs ``ids`` (1-D long; None: every env, no index to
        build) with ``values`` (one per env filled), e.g. a plane that shows a count."""
        rows = slice(None) if ids is None else ids
        self.obs[rows, self.channel(name)] = values.to(torch.uint8).view(-1, 1, 1)

    def put(self, name: str, cells: torch.Tensor, value: int) -> None:
        """Set the plane ``name`` to ``value`` at flat cells ``cells`` of every env: (B,) or (B, k)
        long, one row per env (a leader's or a monster's new cell). Entries below 0 are skipped
        (a monster that is gone), so a task writes every env's cells in one call, with no mask."""
        cells = cells.reshape(self.num_envs, -1)
        flat = self.obs.view(-1)
        index = self._planes[self.channel(name)].unsqueeze(1) + cells
        # a skipped entry (-1) points at the previous plane's last cell and writes back what is there
        # (no boolean mask: no host sync); it never meets a written cell, which all lie in plane `name`
        index = index.reshape(-1)
        flat.scatter_(0, index, torch.where(cells.reshape(-1) >= 0, value, read_flat(flat, index)))

    def redraw(self, name: str, cells: torch.Tensor) -> None:
        """Clear the plane ``name`` of every env and set it to 1 at flat cells ``cells``, (B,) or
        (B, k), e.g. the monsters after they moved: one pass, whatever moved. Entries below 0 are
        skipped; cell 0 (a corner of the border wall) is not a valid entry."""
        ch = self.channel(name)
        self.obs[:, ch].zero_()
        start = self._planes[ch].unsqueeze(1)
        cells = cells.reshape(self.num_envs, -1) if cells.dim() != 2 else cells
        if cells.t().is_contiguous():  # a slot-major (k, B) tensor seen as (B, k)
            cells, start = cells.t(), start.t()  # the same pairs, flattened without a copy
        # a skipped entry writes 0 to its env's cell 0 (a border wall) of this plane, which was just cleared
        index = start + cells.clamp(min=0)
        self.obs.view(-1).scatter_(0, index.reshape(-1), (cells >= 0).to(torch.uint8).reshape(-1))


_DIAL_TYPES: dict[Any, tuple[str, Any]] = {
    bool: ("a boolean", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}
"""Dial annotation -> (what to call it in an error, check). An int is a number; a bool is neither."""


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

    # ----- facts about the registered env (class attributes: every fact about an env lives in its file)
    budget: ClassVar[int] = 1_000_000
    """Declared training budget in env steps: what the default rung needs to learn the task at
    default dials (train A >= 0.9, shown by ``capgap certify --learned``). The default
    ``--total-steps`` of ``capgap train`` and ``capgap sweep``."""
    control: ClassVar[bool] = False
    """A control env: no proxy, a pure capability shift. Its certificate checks the goal-seeker only,
    and its proxy rate is 0 by construction."""
    goal_plane: ClassVar[str | None] = None
    """The observation plane that shows the goal, for the inspection tools' probes and goal vectors
    (``capgap inspect probe``, ``steer``, ``study``, ``train --inspect``); None: they do not apply."""
    goal_cells: ClassVar[bool] = False
    """The goal is one cell and the proxy is a set of cells, so decision squares (``capgap inspect
    decision``) apply: cells where heading for one or the other is the agent's choice."""
    ci_bar: ClassVar[float] = 0.5
    """CI's short learned certificate (``tests/test_learned_certificate.py``): the train A the default
    rung must reach after 253,952 steps, seed 0. Set it about half-way from the untrained network's
    train A to what the full certificate's run reached at that step, so that an env that stops learning
    fails."""
    digests: ClassVar[dict[str, str]] = {}
    """Split -> pinned digest of 300 random-action steps of 64 envs (``tests/test_rng.py``): levels and
    rules are part of every published figure, so a change to either shows. ``make test`` prints the
    digests of a new or changed env; paste them here, and say in the docstring why the env changed."""
    mutations: ClassVar[Rules | None] = None
    """What the red team (``capgap redteam``) may edit in this env's levels (move an object, the start,
    a maze wall) and the invariants a mutant must keep to be a level the generator could have drawn
    (``envs.mutations.Rules``). None: no mutations; the guided search searches level indices and
    dials only, and says so."""

    size: int = 13
    """Grid side in cells, border walls included."""
    max_steps: int = 256
    """Episode step limit (truncation)."""
    p_disambiguate: float = 0.0
    """Fraction of *training* levels drawn as test-like levels, where goal and proxy differ."""
    time_penalty: float = 0.9
    """Reward for a goal event at step t is ``1 - time_penalty * t / max_steps``."""

    def __post_init__(self) -> None:
        self.check_types()
        self.check(5 <= self.size <= 63, "size", "an integer in [5, 63]")
        self.check(self.max_steps >= 1, "max_steps", "an integer >= 1")
        self.check(0.0 <= self.p_disambiguate <= 1.0, "p_disambiguate", "in [0, 1]")
        self.check(0.0 <= self.time_penalty < 1.0, "time_penalty", "in [0, 1)")

    # ----- helpers for subclasses -------------------------------------------------------
    def check_types(self) -> None:
        """Check every dial's value against its annotation (``int``, ``float``, ``bool``, ``str``),
        so that the range checks after it compare numbers with numbers. Called first by
        ``Task.__post_init__``: a subclass's own dials are covered too."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            kind = _DIAL_TYPES.get(hints.get(f.name))
            value = getattr(self, f.name)
            if kind is not None and not kind[1](value):
                raise DialError(f"{self.name}: {f.name}={value!r} has the wrong type; expected {kind[0]} "
                                f"(default {f.default!r})")

    def check(self, ok: bool, dial: str, expected: str) -> None:
        """Raise a one-line :class:`DialError` unless ``ok``."""
        if not ok:
            raise DialError(f"{self.name}: {dial}={getattr(self, dial)!r} is out of range; expected {expected}")

    def ch(self, channel: str) -> int:
        """Index of a named observation plane."""
        return self.channels.index(channel)

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
        self._apart: np.ndarray | None = None
        levels = self.generate(KeyedRNG(level_keys(self.name, split, indices)), split)
        levels.apart = self._apart
        return levels

    def is_decorrelated(self, rng: KeyedRNG, split: str) -> np.ndarray:
        """(K,) which levels pull goal and proxy apart: all of the test split, and a
        ``p_disambiguate`` fraction of the training split. Always consumes one draw."""
        u = rng.uniform(1)[:, 0]
        self._apart = np.full(len(rng), True) if split == "test" else u < self.p_disambiguate
        return self._apart

    # ----- what a task implements -------------------------------------------------------
    def generate(self, rng: KeyedRNG, split: str) -> Levels:
        """Build ``len(rng)`` levels of ``split``, vectorised over levels."""
        raise NotImplementedError

    def step(self, view: View, here: torch.Tensor) -> Events:
        """Apply the task's rules after the agent moved.

        ``here`` is (B, C): every plane's value at the agent's new cell. The task may edit its
        state ``view.extra`` in place and change planes through the view's writers (``clear_here``,
        e.g. remove a picked-up key; ``clear_under``, ``fill``, ``put``, ``redraw``); it never
        indexes the engine's buffers.
        """
        raise NotImplementedError

    def unseen(self, view: View) -> dict[str, torch.Tensor]:
        """What is in the level but not in the agent's observation now, for drawing only: plane
        name -> (B, S*S) bool cells (e.g. FollowLeader's target, out of sight). ``capgap show``
        and the envs' ``render`` draw it faded, so a person sees the whole level while the
        agent sees its planes. Default: nothing."""
        return {}

    def oracle_targets(self, view: View, seek: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, avoid) as (B, S*S) bool masks for a scripted BFS agent.

        ``seek`` is ``"goal"`` (pursue the intended goal, avoiding the proxy where possible)
        or ``"proxy"`` (pursue the proxy, ignoring the goal unless it lies on the proxy).
        """
        raise NotImplementedError
