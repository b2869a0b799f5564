"""Batched layout builders (numpy): mazes, rooms, reachability.

All functions work on a batch of K levels at once; grids are (K, S, S) bool arrays with
``True`` = wall, border walls included, so moves never leave the array.
"""

from __future__ import annotations

import functools

import numpy as np

from .rng import KeyedRNG


def room(k: int, size: int) -> np.ndarray:
    """(K, S, S) walls: an empty room, walls on the border only."""
    walls = np.ones((k, size, size), dtype=bool)
    walls[:, 1:-1, 1:-1] = False
    return walls


@functools.cache
def _maze_graph(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells (at odd coordinates) of a size×size maze, and its candidate passages."""
    n = (size - 1) // 2
    cells = np.array([(2 * r + 1) * size + 2 * c + 1 for r in range(n) for c in range(n)])
    u, v, mid = [], [], []
    for r in range(n):
        for c in range(n):
            i = r * n + c
            if c + 1 < n:  # passage to the east neighbour
                u.append(i), v.append(i + 1), mid.append(cells[i] + 1)
            if r + 1 < n:  # passage to the south neighbour
                u.append(i), v.append(i + n), mid.append(cells[i] + size)
    return cells, np.array(u), np.array(v), np.array(mid)


def maze(rng: KeyedRNG, size: int) -> np.ndarray:
    """(K, S, S) walls of perfect mazes (one path between any two cells): randomised Kruskal.

    ``size`` is odd; cells sit at odd coordinates, so a 13×13 grid holds a 6×6-cell maze.
    The loop runs over the passages (60 for 13×13), each step vectorised over the K levels.
    """
    k = len(rng)
    cells, eu, ev, emid = _maze_graph(size)
    walls = np.ones((k, size * size), dtype=bool)
    walls[:, cells] = False
    labels = np.tile(np.arange(len(cells)), (k, 1))
    order = rng.permutation(len(eu))
    rows = np.arange(k)
    for j in range(len(eu)):
        e = order[:, j]
        lu, lv = labels[rows, eu[e]], labels[rows, ev[e]]
        join = lu != lv
        walls[rows[join], emid[e[join]]] = False
        labels = np.where(join[:, None] & (labels == lu[:, None]), lv[:, None], labels)
    return walls.reshape(k, size, size)


def _pack(mask: np.ndarray) -> np.ndarray:
    """(K, S, S) bool -> (K, S) uint64: each grid row as a bitset (bit x = column x)."""
    weights = np.left_shift(np.uint64(1), np.arange(mask.shape[-1], dtype=np.uint64))
    return (mask.astype(np.uint64) * weights).sum(-1, dtype=np.uint64)


def _unpack(rows: np.ndarray, size: int) -> np.ndarray:
    return ((rows[..., None] >> np.arange(size, dtype=np.uint64)) & np.uint64(1)).astype(bool)


def reachable(passable: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(K, S, S) bool: the cells reachable from flat index ``start[i]`` through passable cells.

    A bitset flood fill: every grid row is one uint64, so each step of the fill costs a few
    operations on (K, S) integers however large the batch.
    """
    k, s, _ = passable.shape
    ok = _pack(passable)
    r = _pack(one_hot(k, s, start)) & ok
    one = np.uint64(1)
    while True:
        n = r | (r << one) | (r >> one)
        n[:, 1:] |= r[:, :-1]
        n[:, :-1] |= r[:, 1:]
        n &= ok
        if np.array_equal(n, r):
            return _unpack(r, s)
        r = n


def dilate(mask: np.ndarray) -> np.ndarray:
    """(K, S, S): the mask plus its 4-neighbours."""
    out = mask.copy()
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :-1, :] |= mask[:, 1:, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def one_hot(k: int, size: int, idx: np.ndarray) -> np.ndarray:
    """(K, S, S) bool with True at flat index ``idx[i]`` of level i (nothing where idx < 0)."""
    out = np.zeros((k, size * size), dtype=bool)
    ok = idx >= 0
    out[np.arange(k)[ok], idx[ok]] = True
    return out.reshape(k, size, size)
