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

Which edits an env allows, and what a level of each split must satisfy, is a table here
(:data:`RULES`, keyed by the task's name), not a fact of the env files: the rules are the red
team's reading of each generator. They are conservative. Only planes that hold nothing but
objects move (never one that the task's ``extra`` state refers to: FollowLeader's leader and
target, MonsterShields' monsters), counts and colours never change, and every mutant is checked
against its split's invariants (:func:`valid`: the ones the generator guarantees, e.g. the test
cheese outside the corner and reachable without crossing it), so a mutant is a level the
generator *could* have drawn. An env without rules (FollowLeader, whose leader's path and target
live in ``extra``; an env registered later) has no mutations: the guided search then searches
level indices and dials only, and says so. The red team additionally plays the scripted
goal-seeker on every mutant and keeps only those it solves (``capgap.eval.redteam``), so a
mutation can never make a level unsolvable and count as a failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from capgap.envs import Task
from capgap.envs.layout import _maze_graph


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


def generate(task: Task, split: str, indices: np.ndarray) -> list[Level]:
    """The levels ``(split, index)`` of ``task``, one :class:`Level` each."""
    lv = task.levels(split, np.asarray(indices, dtype=np.int64))
    return [Level(lv.planes[i].astype(np.uint8), int(lv.start[i]), lv.extra[i].astype(np.int64), int(ix))
            for i, ix in enumerate(indices)]


# ----- the invariants of each env's levels ---------------------------------------------------------

def _cells(plane: np.ndarray) -> np.ndarray:
    return np.flatnonzero(plane.reshape(-1))


def _room_ok(walls: np.ndarray) -> bool:
    """Walls on the border, none inside: the room envs."""
    inner = np.zeros_like(walls, dtype=bool)
    inner[1:-1, 1:-1] = True
    return bool((walls.astype(bool) == ~inner).all())


def perfect_maze(walls: np.ndarray) -> bool:
    """The walls of a perfect maze (``layout.maze``): every cell (odd coordinates) open, every
    non-passage wall closed, and the open passages a spanning tree of the cells (n - 1 of them,
    all cells connected)."""
    s = walls.shape[0]
    cells, _, _, mid = _maze_graph(s)
    flat = walls.reshape(-1).astype(bool)
    slots = np.zeros(s * s, dtype=bool)
    slots[cells] = slots[mid] = True
    if flat[cells].any() or not flat[~slots].all() or int((~flat[mid]).sum()) != len(cells) - 1:
        return False
    return len(_reach(~flat, int(cells[0]), s)) == len(cells) + len(cells) - 1


def _reach(passable: np.ndarray, start: int, s: int) -> dict[int, int]:
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


def _apart(task: Task, split: str) -> set[bool]:
    """Whether a level of ``split`` may pull goal and proxy apart: always on the test split; on the
    training split never, always, or either, by ``p_disambiguate`` (``Task.is_decorrelated``)."""
    if split == "test" or task.p_disambiguate == 1:
        return {True}
    return {False} if task.p_disambiguate == 0 else {False, True}


def _reachable(open_: np.ndarray, start: int, goal: int, s: int) -> bool:
    return goal in _reach(open_.reshape(-1), start, s)


def _cheese_corner(task: Task, split: str, lv: Level) -> bool:
    s = task.size
    walls, cheese = lv.planes[0].astype(bool), _cells(lv.planes[2])
    region = task.region.reshape(-1)
    if len(cheese) != 1 or not perfect_maze(walls) or region[lv.start] or cheese[0] == lv.start:
        return False
    apart = bool(lv.extra[0])
    if region[cheese[0]] == apart or apart not in _apart(task, split):
        return False
    # a test-like level: the cheese is reachable without entering the corner region
    return not apart or _reachable(~walls & ~task.region, lv.start, int(cheese[0]), s)


def _cheese_dish(task: Task, split: str, lv: Level) -> bool:
    s = task.size
    walls, cheese, dish = lv.planes[0].astype(bool), _cells(lv.planes[2]), _cells(lv.planes[3])
    if len(cheese) != 1 or len(dish) != 1 or not perfect_maze(walls) or lv.start in (cheese[0], dish[0]):
        return False
    if any((lv.planes[k] != lv.planes[3]).any() for k in range(4, lv.planes.shape[0])):  # salience copies
        return False
    apart = bool(lv.extra[0])
    if apart not in _apart(task, split):
        return False
    if not apart:
        return cheese[0] == dish[0]
    (cy, cx), (dy, dx) = divmod(int(cheese[0]), s), divmod(int(dish[0]), s)
    if abs(cy - dy) + abs(cx - dx) <= 1:  # the cheese never lies on or next to the dish
        return False
    dish_mask = lv.planes[3].astype(bool)
    return _reachable(~walls & ~dish_mask, lv.start, int(cheese[0]), s)


def _colour_shape(task: Task, split: str, lv: Level) -> bool:
    p = lv.planes.astype(bool)
    shapes, colours = p[2:5].sum(0), p[5:8].sum(0)
    objects = shapes > 0
    if not _room_ok(p[0]) or (shapes > 1).any() or (colours != objects).any():
        return False
    if int(objects.sum()) != task.n_objects or objects.reshape(-1)[lv.start] or int(p[2].sum()) != 1:
        return False
    if any((p[k] != p[5]).any() for k in range(8, p.shape[0])):  # salience copies of red
        return False
    circle_red = bool((p[2] & p[5]).any())
    # one red object: the circle on a training level, a distractor on a test-like one
    return int(p[5].sum()) == 1 and (not circle_red) in _apart(task, split)


def _keys_chests(task: Task, split: str, lv: Level) -> bool:
    p = lv.planes.astype(bool)
    key, chest = p[task.ch("key")], p[task.ch("chest")]
    held, keys_left, chests_left, _ = lv.extra
    if not _room_ok(p[0]) or (key & chest).any() or held != 0 or p[task.ch("held")].any():
        return False
    if int(key.sum()) != keys_left or int(chest.sum()) != chests_left:
        return False
    return not (key | chest).reshape(-1)[lv.start]


def _lava_shift(task: Task, split: str, lv: Level) -> bool:
    s = task.size
    goal = _cells(lv.planes[2])
    lava = lv.planes[3].astype(bool).reshape(-1)
    if not _room_ok(lv.planes[0]) or len(goal) != 1:
        return False
    # the start in the first column, the goal in the last open one, neither on lava
    return lv.start % s == 1 and goal[0] % s == s - 2 and not lava[goal[0]] and not lava[lv.start]


def _monster_shields(task: Task, split: str, lv: Level) -> bool:
    from capgap.envs.monster_shields import MONSTER

    p = lv.planes.astype(bool)
    apple, shield, monster = p[task.ch("apple")], p[task.ch("shield")], p[task.ch("monster")]
    x = lv.extra
    mons = x[MONSTER:MONSTER + task.slots]
    mons = mons[mons >= 0]
    flat_m = np.zeros(task.size**2, dtype=bool)
    flat_m[mons] = True
    if not _room_ok(p[0]) or (flat_m != monster.reshape(-1)).any() or (apple & shield).any():
        return False
    items = (apple | shield).reshape(-1)
    if (items & flat_m).any() or items[lv.start] or int(apple.sum()) != x[task.extras.index("apples_left")]:
        return False
    return int(x[0]) == 0 and not p[task.ch("held")].any()


@dataclass(frozen=True)
class Rules:
    """What may be edited in an env's levels, and what its levels must satisfy."""

    objects: tuple[str, ...]
    """Planes that hold only movable objects: every plane of one of these names moves with its cell."""
    check: Callable[[Task, str, Level], bool]
    """The split's invariants, as the env's generator guarantees them."""
    start: bool = True
    """The start cell may move."""
    maze: bool = False
    """The walls are a perfect maze: a wall may move (:func:`move_wall`)."""


RULES: dict[str, Rules] = {
    "CheeseCorner": Rules(("cheese",), _cheese_corner, maze=True),
    "CheeseDish": Rules(("cheese", "dish"), _cheese_dish, maze=True),
    "ColourShape": Rules(("circle", "square", "triangle", "red", "green", "blue"), _colour_shape),
    "KeysChests": Rules(("key", "chest"), _keys_chests),
    "LavaShift": Rules(("goal",), _lava_shift),
    # monsters start >= 4 steps from the agent and live in `extra`: the start and the monsters stay
    "MonsterShields": Rules(("apple", "shield"), _monster_shields, start=False),
}
"""Task name -> its mutation rules. FollowLeader has none: its leader's path, target and decoy are
``extra`` state tied to the start and to each other."""


def rules(task: Task) -> Rules | None:
    """The mutation rules of ``task``'s env, or None where it allows no mutations."""
    return RULES.get(task.name)


def valid(task: Task, split: str, lv: Level) -> bool:
    """Whether ``lv`` is a legal level of ``split``: the engine's shape, an open start cell, and the
    env's own invariants (:attr:`Rules.check`). False for an env without rules."""
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
    parent = _reach(~walls, a, s)  # the tree path b -> a, before the passage opens
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
