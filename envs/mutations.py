"""What the red team may edit in an env's levels: :class:`Rules`, declared in the env's own file.

The red team (``capgap redteam``) mutates levels: it moves an object, the agent's start, or a maze
wall, and keeps a mutant only if it is still a level the env's generator *could* have drawn. Which
edits are safe, and what a level of each split must satisfy, are facts about the env, so they live
in its file, as the class attribute ``Task.mutations``::

    def _legal(task: CheeseCorner, split: str, lv: Level) -> bool:
        ...  # the split's invariants, as the generator guarantees them

    class CheeseCorner(Task):
        mutations = Rules(("cheese",), _legal, maze=True)

``mutations = None`` (the default) opts out: the guided search then searches level indices and
dials only, and says so. The edits themselves and the generic checks every level gets (the
engine's shape, closed border, an open start) are the red team's machinery, in
``capgap.eval.mutate``; this module holds what an env needs to state its rules: :class:`Level`,
:class:`Rules` and a few helpers its check may use (:func:`perfect_maze`, :func:`room_ok`,
:func:`reachable`, :func:`may_be_apart`, :func:`cells`). It imports nothing from ``capgap.eval``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .layout import _maze_graph

if TYPE_CHECKING:
    from .task import Task


@dataclass(eq=False)
class Level:
    """One level as the engine loads it (``GridCore._load``)."""

    planes: np.ndarray
    """(C, S, S) uint8 object planes; the agent plane is empty."""
    start: int
    """Flat index ``y * S + x`` of the agent's start cell."""
    extra: np.ndarray
    """(E,) int64: the task's per-level state (``Task.extras``)."""
    index: int = 0
    """The generated level this one derives from (``Task.levels(split, [index])``)."""
    edits: tuple[str, ...] = field(default_factory=tuple)
    """The mutations applied to it, in order (empty: the level as generated)."""

    def copy(self) -> Level:
        return Level(self.planes.copy(), int(self.start), self.extra.copy(), self.index, self.edits)


@dataclass(frozen=True)
class Rules:
    """What the red team may edit in an env's levels, and what its levels must satisfy.

    Be conservative: a plane moves only if it holds nothing but objects (never one that the task's
    ``extra`` state refers to, e.g. MonsterShields' monsters), and counts and colours never change.
    """

    objects: tuple[str, ...]
    """Planes that hold only movable objects: every plane of one of these names moves with its cell
    (a CheeseDish training cheese and the dish under it move together)."""
    check: Callable[[Any, str, Level], bool]
    """``check(task, split, level)``: whether ``level`` satisfies the invariants that the env's
    generator guarantees on ``split`` (the task is the env's own ``Task`` instance). The border
    walls, the planes' shape and an open, empty-agent start are checked before it, for every env."""
    start: bool = True
    """The start cell may move."""
    maze: bool = False
    """The walls are a perfect maze: a wall may move (``capgap.eval.mutate.move_wall``)."""


# ----- helpers for an env's check ------------------------------------------------------------------

def cells(plane: np.ndarray) -> np.ndarray:
    """The flat indices of a plane's nonzero cells."""
    return np.flatnonzero(plane.reshape(-1))


def room_ok(walls: np.ndarray) -> bool:
    """Walls on the border, none inside: the room envs (``layout.room``)."""
    inner = np.zeros_like(walls, dtype=bool)
    inner[1:-1, 1:-1] = True
    return bool((walls.astype(bool) == ~inner).all())


def perfect_maze(walls: np.ndarray) -> bool:
    """The walls of a perfect maze (``layout.maze``): every cell (odd coordinates) open, every
    non-passage wall closed, and the open passages a spanning tree of the cells (n - 1 of them,
    all cells connected)."""
    s = walls.shape[0]
    maze_cells, _, _, mid = _maze_graph(s)
    flat = walls.reshape(-1).astype(bool)
    slots = np.zeros(s * s, dtype=bool)
    slots[maze_cells] = slots[mid] = True
    if flat[maze_cells].any() or not flat[~slots].all() or int((~flat[mid]).sum()) != len(maze_cells) - 1:
        return False
    return len(reach(~flat, int(maze_cells[0]), s)) == len(maze_cells) + len(maze_cells) - 1


def reach(passable: np.ndarray, start: int, s: int) -> dict[int, int]:
    """Cells reachable from ``start`` through ``passable`` (flat, bool), each with its BFS parent."""
    parent = {start: -1}
    queue = deque([start])
    while queue:
        c = queue.popleft()
        for d in (-s, 1, s, -1):
            n = c + d
            if 0 <= n < s * s and passable[n] and n not in parent:
                parent[n] = c
                queue.append(n)
    return parent


def reachable(open_: np.ndarray, start: int, goal: int, s: int) -> bool:
    """Whether ``goal`` can be reached from ``start`` through the cells ``open_`` ((S, S) bool)."""
    return goal in reach(open_.reshape(-1), start, s)


def may_be_apart(task: Task, split: str) -> set[bool]:
    """Whether a level of ``split`` may pull goal and proxy apart: always on the test split; on the
    training split never, always, or either, by ``p_disambiguate`` (``Task.is_decorrelated``)."""
    if split == "test" or task.p_disambiguate == 1:
        return {True}
    return {False} if task.p_disambiguate == 0 else {False, True}
