"""Level mutations for the red team (``capgap redteam``): small edits of one level that keep it a
legal level of its split.

A level here is what the engine loads (:class:`Level`: the planes, the start cell, the task's
``extra`` state). A mutation is one of three edits:

* **move an object**: everything on one object cell (the cheese; the dish; a key; the red square;
  on a CheeseDish training level the cheese *and* the dish under it, which move together) goes to
  a free cell, one to two cells away or anywhere;
* **move the start** cell of the agent;
* **move a wall** (maze envs only): open one closed passage of the maze and close another passage
  on the loop that this made, so the maze stays *perfect* (one path between any two cells: a
  spanning tree of its cells), as every generated maze is.

This module is the machinery, the same for every env. Which edits an env allows, and what a level
of each split must satisfy, are facts about the env, declared in its own file as
``Task.mutations`` (a :class:`~capgap.envs.mutations.Rules`: the planes that may move, whether the
start and the maze walls may, and the env's invariant check); :func:`valid` adds the checks every
level gets (the engine's shape, closed border, an open start) and calls the env's. The rules are the
red team's reading of each generator, and conservative: only planes that hold nothing but objects
move (never one that the task's ``extra`` state refers to: FollowLeader's leader and target,
MonsterShields' monsters), counts and colours never change, and every mutant is checked against
its split's invariants (the ones the generator guarantees, e.g. the test cheese outside the corner
and reachable without crossing it), so a mutant is a level the generator *could* have drawn. An env
without rules (``mutations = None``: FollowLeader, whose leader's path and target live in
``extra``; the base class's default) has no mutations: the guided search then searches level
indices and dials only, and says so. The red team additionally plays the scripted goal-seeker on
every mutant and keeps only those it solves (``capgap.eval.redteam``), so a mutation can never make
a level unsolvable and count as a failure. How a new env opts in: ``docs/adding_an_env.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from capgap.envs import Task
from capgap.envs.layout import _maze_graph
from capgap.envs.mutations import Level, Rules, perfect_maze, reach

__all__ = ["Level", "Rules", "generate", "move_object", "move_start", "move_wall", "mutate", "operators",
           "perfect_maze", "rules", "valid"]


def generate(task: Task, split: str, indices: np.ndarray) -> list[Level]:
    """The levels ``(split, index)`` of ``task``, one :class:`Level` each."""
    lv = task.levels(split, np.asarray(indices, dtype=np.int64))
    return [Level(lv.planes[i].astype(np.uint8), int(lv.start[i]), lv.extra[i].astype(np.int64), int(ix))
            for i, ix in enumerate(indices)]


# ----- what a level must satisfy ------------------------------------------------------------------

def rules(task: Task) -> Rules | None:
    """The mutation rules of ``task``'s env (``Task.mutations``, declared in its file), or None where
    it allows no mutations."""
    return task.mutations


def valid(task: Task, split: str, lv: Level) -> bool:
    """Whether ``lv`` is a legal level of ``split``: the engine's shape, an open start cell, and the
    env's own invariants (:attr:`Rules.check`, from ``Task.mutations``). False for an env without rules."""
    r = rules(task)
    s = task.size
    if r is None or lv.planes.shape != (len(task.channels), s, s) or not 0 <= lv.start < s * s:
        return False
    if lv.planes[0].reshape(-1)[lv.start] or lv.planes[1].any():
        return False
    border = np.ones((s, s), dtype=bool)
    border[1:-1, 1:-1] = False
    return bool(lv.planes[0].astype(bool)[border].all()) and r.check(task, split, lv)


# ----- the edits -----------------------------------------------------------------------------------

def _object_planes(task: Task, r: Rules) -> np.ndarray:
    return np.array([i for i, ch in enumerate(task.channels) if ch in r.objects], dtype=np.int64)


def _destination(free: np.ndarray, cell: int, s: int, rng: np.random.Generator) -> int:
    """A free cell one or two steps (Manhattan) from ``cell``, or anywhere (each a third of the
    time, the near ones falling back to anywhere where none is free); -1 if no cell is free."""
    radius = (1, 2, 2 * s)[int(rng.integers(3))]
    y, x = np.divmod(np.arange(s * s), s)
    cy, cx = divmod(cell, s)
    near = free & (np.abs(y - cy) + np.abs(x - cx) <= radius)
    pool = np.flatnonzero(near if near.any() else free)
    return int(rng.choice(pool)) if len(pool) else -1


def _free(lv: Level, planes: np.ndarray) -> np.ndarray:
    """Open cells holding no object and not the start."""
    free = ~lv.planes[0].reshape(-1).astype(bool)
    if len(planes):
        free &= ~lv.planes[planes].reshape(len(planes), -1).any(0)
    free[lv.start] = False
    return free


def move_object(task: Task, lv: Level, rng: np.random.Generator) -> Level | None:
    """Move everything on one object cell to a free cell."""
    planes = _object_planes(task, rules(task))
    occupied = np.flatnonzero(lv.planes[planes].reshape(len(planes), -1).any(0)) if len(planes) else []
    if not len(occupied):
        return None
    s = task.size
    src = int(rng.choice(occupied))
    dst = _destination(_free(lv, planes), src, s, rng)
    if dst < 0:
        return None
    out = lv.copy()
    flat = out.planes.reshape(out.planes.shape[0], -1)
    what = sorted({task.channels[k] for k in planes if flat[k, src]})
    flat[planes, dst] = flat[planes, src]
    flat[planes, src] = 0
    out.edits = (*lv.edits, f"move {'+'.join(what)} {divmod(src, s)}->{divmod(dst, s)}")
    return out


def move_start(task: Task, lv: Level, rng: np.random.Generator) -> Level | None:
    """Move the agent's start cell to a free cell."""
    s = task.size
    dst = _destination(_free(lv, _object_planes(task, rules(task))), lv.start, s, rng)
    if dst < 0:
        return None
    out = lv.copy()
    out.start = dst
    out.edits = (*lv.edits, f"move start {divmod(lv.start, s)}->{divmod(dst, s)}")
    return out


def move_wall(task: Task, lv: Level, rng: np.random.Generator) -> Level | None:
    """Open a closed passage of a perfect maze and close another on the loop it made (one not under
    the start or an object): the maze stays a spanning tree of its cells, so it stays perfect and
    every cell stays reachable."""
    s = task.size
    _, u, v, mid = _maze_graph(s)
    cells = _maze_graph(s)[0]
    walls = lv.planes[0].reshape(-1).astype(bool)
    closed = np.flatnonzero(walls[mid])
    if not len(closed):
        return None
    e = int(rng.choice(closed))
    a, b = int(cells[u[e]]), int(cells[v[e]])
    parent = reach(~walls, a, s)  # the tree path b -> a, before the passage opens
    path, c = [], b
    while c != -1:
        path.append(c)
        c = parent[c]
    planes = _object_planes(task, rules(task))
    busy = set(np.flatnonzero(lv.planes[planes].reshape(len(planes), -1).any(0)).tolist()) | {lv.start}
    slots = set(mid.tolist())
    candidates = [c for c in path if c in slots and c not in busy]
    if not candidates:
        return None
    shut = int(rng.choice(candidates))
    out = lv.copy()
    flat = out.planes[0].reshape(-1)
    flat[mid[e]] = 0
    flat[shut] = 1
    out.edits = (*lv.edits, f"move wall {divmod(shut, s)}->{divmod(int(mid[e]), s)}")
    return out


def operators(task: Task) -> list[Callable[[Task, Level, np.random.Generator], Level | None]]:
    """The edits ``task``'s env allows (empty: none)."""
    r = rules(task)
    if r is None:
        return []
    ops: list[Callable[[Task, Level, np.random.Generator], Level | None]] = [move_object] if r.objects else []
    return ops + ([move_start] if r.start else []) + ([move_wall] if r.maze else [])


def mutate(task: Task, split: str, lv: Level, rng: np.random.Generator, edits: int = 1,
           tries: int = 16) -> Level | None:
    """``lv`` with ``edits`` random edits, each one a legal level of ``split`` (:func:`valid`); None
    if ``tries`` attempts found no legal edit (or the env allows none). Deterministic given ``rng``."""
    ops = operators(task)
    if not ops:
        return None
    out = lv
    for _ in range(edits):
        for _ in range(tries):
            cand = ops[int(rng.integers(len(ops)))](task, out, rng)
            if cand is not None and valid(task, split, cand):
                out = cand
                break
        else:
            return None
    return out
