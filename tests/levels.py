"""Levels drawn as pictures, for rule tests that read like the level they play.

A picture is a square, one character per cell and a row per line (its side is the task's
``size``; indentation and blank lines around it are ignored)::

    lv = level(E.KeysChests, '''
        #####
        #AKC#
        #...#
        #...#
        #####
    ''', max_steps=10)
    run = lv.play([RIGHT, RIGHT])     # a real engine (GridCore) of one env plays the level
    assert run.rewards == [0.0, approx(0.82)] and run.outcome == "goal"
    assert run.frames[-1] == picture('''
        #####
        #..A#
        #...#
        #...#
        #####
    ''')

``#`` is a wall, ``.`` an empty cell, ``A`` the agent's start; every other character comes from
the task's legend (``LEGENDS``: character -> the planes set to 1 in its cell). What a task keeps
in ``extra`` (counts, a leader's path, monsters' slots) is derived from the picture by the
task's entry in ``SETUPS`` and can be overridden by name (``extra={"held": 1}``).

The level goes into the engine through a test-only subclass of the task whose ``generate``
returns it (every env, every episode) and whose ``step`` records the task's :class:`Events`, so
a test sees goal and proxy events step by step as well as the engine's reward and outcome.
:meth:`Level.view` gives the same state as a hand-made :class:`capgap.envs.View`, no engine.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import capgap.envs as E
from capgap.envs.task import Events, Levels, Task, View

UP, RIGHT, DOWN, LEFT = range(4)
"""The actions (``capgap.envs.ACTIONS``)."""
assert E.ACTIONS == ("up", "right", "down", "left")

COMMON: dict[str, tuple[str, ...]] = {"#": ("wall",), ".": (), "A": ()}
"""Characters of every task: a wall, an empty cell, the agent's start (drawn as ``A`` wherever it stands)."""

LEGENDS: dict[str, dict[str, tuple[str, ...]]] = {
    "CheeseCorner": {"C": ("cheese",)},
    "CheeseDish": {"C": ("cheese",), "D": ("dish",), "B": ("cheese", "dish")},  # B: the cheese on its dish
    "ColourShape": {  # upper case red, lower case green; blue through a test's own legend
        "O": ("circle", "red"), "S": ("square", "red"), "T": ("triangle", "red"),
        "o": ("circle", "green"), "s": ("square", "green"), "t": ("triangle", "green"),
    },
    "FollowLeader": {
        # drawn state: the leader, its trail, the target where the agent sees it
        "L": ("leader",), "+": ("trail",), "T": ("target",),
        # the level: the target (1..9: the leader's path, 1 its first cell; * its end, on the target)
        "*": (), **{str(d): () for d in range(1, 10)},
    },
    "KeysChests": {"K": ("key",), "C": ("chest",)},
    "LavaShift": {"G": ("goal",), "~": ("lava",)},
    "MonsterShields": {
        "a": ("apple",), "S": ("shield",), "M": ("monster",),
        **{str(d): ("monster",) for d in range(1, 9)},  # a monster of slot d - 1 (M: the next free slot)
    },
}
"""Task name -> its characters (besides ``COMMON``): the planes set to 1 in the character's cell.
:func:`draw` inverts it: a cell is drawn as the first character whose planes are exactly those set there."""


def picture(text: str) -> str:
    """A picture as :func:`draw` writes it: dedented, blank lines and surrounding spaces dropped."""
    return "\n".join(line.strip() for line in textwrap.dedent(text).splitlines() if line.strip())


def cells_of(rows: list[str], char: str) -> list[int]:
    """Flat cells ``y * S + x`` of ``char``, in reading order."""
    return [y * len(rows) + x for y, row in enumerate(rows) for x, c in enumerate(row) if c == char]


# ----- per-task state: what `generate` would have put in `extra` (and the planes it implies) ---------
def _cheese_corner(task: Task, lv: Level, given: dict[str, int]) -> dict[str, int]:
    # the corner is the proxy unless it holds the cheese
    return {"proxy_active": int(not task.region.reshape(-1)[lv.cell("C")])}


def _cheese_dish(task: Task, lv: Level, given: dict[str, int]) -> dict[str, int]:
    return {"proxy_active": int(not lv.marks.get("B"))}  # apart unless drawn on its dish


def _follow_leader(task: Task, lv: Level, given: dict[str, int]) -> dict[str, int]:
    path = [lv.start] + [lv.cell(str(d)) for d in range(1, 10) if str(d) in lv.marks] + lv.marks.get("*", [])
    if len(path) < 2 or len(path) > task.path_len:
        raise ValueError(f"draw the leader's path as 1, 2, ... (and * on the target): 1 to {task.path_len - 1} cells")
    s = task.size
    if any(abs(a // s - b // s) + abs(a % s - b % s) != 1 for a, b in itertools.pairwise(path)):
        raise ValueError("the leader's path goes one cell at a time, from the agent's start")
    target = lv.cell("*") if "*" in lv.marks else lv.cell("T")
    path += [path[-1]] * (task.path_len - len(path))  # it stands still at its destination
    out = {"proxy_active": int(path[-1] != target), "target": target, "dest": path[-1], "step": 1}
    out |= {f"path_{i}": c for i, c in enumerate(path)}
    # as generate draws it: the leader one step ahead, the cell it left, the target only if in view
    lv.set("leader", path[1]), lv.set("trail", path[0])
    lv.set("target", target, int(task.sees(lv.start, target)))
    return out


def _keys_chests(task: Task, lv: Level, given: dict[str, int]) -> dict[str, int]:
    held, keys, chests = given.get("held", 0), len(lv.marks.get("K", [])), len(lv.marks.get("C", []))
    lv.planes[task.ch("held")] = held
    return {"held": held, "keys_left": keys, "chests_left": chests, "openable": min(keys + held, chests)}


def _monster_shields(task: Task, lv: Level, given: dict[str, int]) -> dict[str, int]:
    mons = [c for d in range(1, 9) for c in lv.marks.get(str(d), [])] + lv.marks.get("M", [])
    if len(mons) > task.slots:
        raise ValueError(f"{len(mons)} monsters drawn, {task.slots} slots: raise monsters_train or monsters_test")
    mons += [-1] * (task.slots - len(mons))
    apples = len(lv.marks.get("a", []))
    if not apples:
        raise ValueError("draw an apple: a level with none left ends at its first step")
    lv.planes[task.ch("held")] = given.get("held", 0)
    out = {"held": 0, "monsters_left": sum(c >= 0 for c in mons), "apples_left": apples, "apples": apples, "tick": 0}
    return out | {f"monster_{j}": c for j, c in enumerate(mons)} | {f"vertical_{j}": 0 for j in range(task.slots)}


SETUPS: dict[str, Callable[[Task, Level, dict[str, int]], dict[str, int]]] = {
    "CheeseCorner": _cheese_corner,
    "CheeseDish": _cheese_dish,
    "FollowLeader": _follow_leader,
    "KeysChests": _keys_chests,
    "MonsterShields": _monster_shields,
}
"""Task name -> (task, level, the extras given by name) -> every extra, by name (a given one wins).
It may also set planes that follow from them (a count plane, a leader's first cell). A task with
no per-env state (ColourShape, LavaShift) needs no entry."""


# ----- the test-only task: plays the drawn level, records its events ----------------------------------
@functools.cache
def fixed(cls: type[Task]) -> type[Task]:
    """``cls`` whose ``generate`` returns ``self.level`` for every level index, and whose ``step``
    appends the task's :class:`Events` to ``self.events``: the engine runs it as any task."""

    class Fixed(cls):  # type: ignore[valid-type, misc]
        level: Levels
        events: list[Events]

        def generate(self, rng: Any, split: str) -> Levels:
            k = len(rng)
            return Levels(*(np.repeat(getattr(self.level, f), k, axis=0) for f in ("planes", "start", "extra")))

        def step(self, view: View, here: torch.Tensor) -> Events:
            ev = super().step(view, here)
            self.events.append(Events(*(t.clone() for t in ev)))
            return ev

    Fixed.__name__ = Fixed.__qualname__ = f"Fixed{cls.__name__}"
    return Fixed


@dataclass
class Level:
    """One drawn level of ``task`` (a :func:`fixed` task holding it)."""

    task: Task
    rows: list[str]
    planes: np.ndarray
    """(C, S, S) uint8, the agent plane empty (as ``Levels.planes``)."""
    start: int
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(E,) int64, columns named by ``task.extras``."""
    legend: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The test's own characters (over the task's legend), for parsing and for drawing its frames."""

    @property
    def marks(self) -> dict[str, list[int]]:
        """Character -> its cells, in reading order (every character drawn)."""
        return {c: cells_of(self.rows, c) for c in sorted(set("".join(self.rows)))}

    def cell(self, char: str) -> int:
        """The one cell drawn as ``char``."""
        cells = cells_of(self.rows, char)
        if len(cells) != 1:
            raise ValueError(f"{char!r} is drawn {len(cells)} times; expected once")
        return cells[0]

    def set(self, plane: str, cell: int, value: int = 1) -> None:
        """Set every plane named ``plane`` (salience copies too) at flat ``cell``."""
        s = len(self.rows)
        for i, name in enumerate(self.task.channels):
            if name == plane:
                self.planes[i, cell // s, cell % s] = value

    def extras(self) -> dict[str, int]:
        """The per-env state by name."""
        return dict(zip(self.task.extras, self.extra.tolist(), strict=True))

    def levels(self) -> Levels:
        return Levels(self.planes[None].copy(), np.array([self.start]), self.extra[None].copy())

    def core(self, split: str = "test", num_envs: int = 1) -> E.GridCore:
        """A real engine of ``num_envs`` envs, each reset on this level (autoreset off)."""
        self.task.level, self.task.events = self.levels(), []
        core = E.GridCore(self.task, num_envs, split, autoreset=False)
        core.reset(0)
        return core

    def play(self, actions: Sequence[int], split: str = "test") -> Run:
        """Play ``actions`` (0 up, 1 right, 2 down, 3 left) in an engine of one env; every action
        must be played (an episode that ends early is an error)."""
        core = self.core(split)
        run = Run(core, [draw(self.task, core.obs[0], int(core.pos[0]), self.legend)], [run_state(core)])
        for i, a in enumerate(actions):
            if run.episode:
                raise ValueError(f"the episode ended after {i} of {len(actions)} actions")
            reward, term, trunc = core.step(torch.tensor([a]))
            ev = self.task.events[-1]
            run.rewards.append(float(reward[0]))
            run.terminated.append(bool(term[0]))
            run.truncated.append(bool(trunc[0]))
            run.goal_gain.append(float(ev.goal_gain[0]))
            run.proxy.append(bool(ev.proxy[0]))
            run.frames.append(draw(self.task, core.obs[0], int(core.pos[0]), self.legend))
            run.states.append(run_state(core))
            if core.episodes.done[0]:
                e = core.episodes
                run.episode = {"outcome": E.OUTCOMES[int(e.outcome[0])], "ret": float(e.ret[0]),
                               "length": int(e.length[0]), "goal_score": float(e.goal_score[0]),
                               "capability_score": float(e.capability_score[0])}
        return run

    def view(self) -> View:
        """The level as a hand-made View of one env (the agent drawn at its start), no engine."""
        obs = torch.as_tensor(self.planes.copy())[None]
        s = len(self.rows)
        obs[0, 1, self.start // s, self.start % s] = 1
        return View(self.task.channels, obs, torch.tensor([self.start]), torch.as_tensor(self.extra.copy())[None])


@dataclass
class Run:
    """What one env did, a list entry per action played."""

    core: E.GridCore
    frames: list[str]
    """The level drawn before the first action, then after each (``frames[-1]``: now)."""
    states: list[dict[str, int]]
    """The task's per-env state by name (``extra``), before the first action, then after each."""
    rewards: list[float] = field(default_factory=list)
    """The engine's reward (the time factor applied)."""
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    goal_gain: list[float] = field(default_factory=list)
    """The task's goal progress in each step (``Events.goal_gain``)."""
    proxy: list[bool] = field(default_factory=list)
    """The task's proxy event in each step (``Events.proxy``)."""
    episode: dict[str, Any] | None = None
    """The finished episode's statistics (outcome name, ret, length, goal_score, capability_score); None if running."""

    @property
    def outcome(self) -> str | None:
        return self.episode["outcome"] if self.episode else None



def run_state(core: E.GridCore) -> dict[str, int]:
    """Env 0's per-env state, by name."""
    return dict(zip(core.task.extras, core.extra[0].tolist(), strict=True))


def level(task: type[Task] | Task, text: str, *, extra: dict[str, int] | None = None,
          legend: dict[str, tuple[str, ...]] | None = None, **dials: Any) -> Level:
    """Parse a picture into a :class:`Level` of ``task``.

    ``task``: a task class (built with ``size`` = the picture's side and ``dials``) or a task
    (whose size must match). ``extra``: per-env state by name, over what the task's ``SETUPS``
    entry derives. ``legend``: characters to add to (or replace in) the task's legend.
    """
    rows = picture(text).splitlines()
    s = len(rows)
    if any(len(r) != s for r in rows):
        raise ValueError(f"a picture is square: {s} rows of {s} cells; got rows of {sorted({len(r) for r in rows})}")
    if isinstance(task, Task):
        if dials:
            raise ValueError("pass dials with a task class, not with a task")
        if task.size != s:
            raise ValueError(f"{task.name} has size {task.size}; the picture is {s}x{s}")
        dials = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
        task = type(task)
    else:
        dials = {"size": s, **dials}
    base = next(c for c in task.__mro__ if c.__dict__.get("name"))  # the registered task, not a Fixed one
    t = fixed(base)(**dials)
    chars = COMMON | LEGENDS.get(t.name, {}) | (legend or {})
    if unknown := sorted(set("".join(rows)) - set(chars)):
        raise ValueError(f"{t.name}: no legend for {unknown}; it has {''.join(chars)}")
    lv = Level(t, rows, np.zeros((len(t.channels), s, s), np.uint8), 0, legend=dict(legend or {}))
    lv.start = lv.cell("A")
    for char, names in chars.items():
        for c in cells_of(rows, char):
            for name in names:
                lv.set(name, c)
    given = dict(extra or {})
    if unknown := sorted(set(given) - set(t.extras)):
        raise ValueError(f"{t.name} has no extra {unknown}; its extras are {t.extras}")
    state = SETUPS[t.name](t, lv, given) if t.name in SETUPS else {}
    state |= given
    lv.extra = np.array([state[name] for name in t.extras], dtype=np.int64)
    return lv


def draw(task: Task, obs: torch.Tensor | np.ndarray, pos: int, legend: dict[str, tuple[str, ...]] | None = None) -> str:
    """Draw one env's planes (C, S, S) as a picture: ``A`` where the agent is, else the first
    legend character whose planes are exactly those set in the cell (count planes such as
    ``held`` left out), ``?`` if none is."""
    planes = np.asarray(obs)
    s = planes.shape[-1]
    chars = COMMON | LEGENDS.get(task.name, {}) | (legend or {})
    by_planes: dict[frozenset[str], str] = {}
    for char, names in chars.items():
        by_planes.setdefault(frozenset(names), char)
    shown = [(i, n) for i, n in enumerate(task.channels)
             if task.channels.index(n) == i and n != "agent" and n not in task.channel_high]
    rows = []
    for y in range(s):
        row = ""
        for x in range(s):
            here = frozenset(n for i, n in shown if planes[i, y, x])
            row += "A" if y * s + x == pos else by_planes.get(here, "?")
        rows.append(row)
    return "\n".join(rows)


__all__ = ["DOWN", "LEFT", "LEGENDS", "RIGHT", "SETUPS", "UP", "Level", "Run", "draw", "fixed", "level", "picture"]
