"""Counter-based random numbers: every level is a pure function of (task, split, index).

Level generation is batched (thousands of levels per numpy call), yet each level must be
reproducible on its own, whatever batch it was generated in. A stateful generator cannot give
both, so levels draw their randomness from a *key*: ``splitmix64(key + counter)`` for a counter
that advances with every draw. Two levels with the same key draw the same numbers, in any batch.
"""

from __future__ import annotations

import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
INDEX_BITS = 62
"""Level indices live in [0, 2**62): room for procgen-style 'unlimited' levels."""


def mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on a uint64 array (wrap-around arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def salt(*parts: str | int) -> np.uint64:
    """A 64-bit constant from names and numbers (stable across runs and machines)."""
    return np.uint64(zlib.crc32("/".join(map(str, parts)).encode()) | (len(parts) << 40))


def level_keys(task: str, split: str, indices: np.ndarray) -> np.ndarray:
    """The randomness key of each level ``(task, split, index)``."""
    idx = np.asarray(indices, dtype=np.uint64)
    return mix64(mix64(idx ^ salt("level", task, split)) + _GOLDEN)


def episode_indices(seeds: np.ndarray, episodes: np.ndarray, num_levels: int) -> np.ndarray:
    """Which level an env seeded ``seed`` plays in its ``episode``-th episode.

    ``num_levels == 0`` draws from the whole index space (fresh levels); otherwise from
    ``[0, num_levels)`` (a fixed training set, as procgen's ``num_levels``).
    """
    s = np.asarray(seeds, dtype=np.uint64)
    e = np.asarray(episodes, dtype=np.uint64)
    h = mix64(mix64(s ^ salt("episode")) + e * _GOLDEN) >> np.uint64(64 - INDEX_BITS)
    return (h % np.uint64(num_levels) if num_levels else h).astype(np.int64)


def keyed_uniform(seeds: np.ndarray, counters: np.ndarray, *tag: str | int) -> np.ndarray:
    """One uniform float in [0, 1) per (seed, counter) pair, from a stream named ``tag``: a pure
    function of its inputs (no state to save), e.g. a level sampler's per-episode coin."""
    s = np.asarray(seeds, dtype=np.uint64)
    c = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    h = mix64(mix64(s ^ salt("uniform", *tag)) + c * _GOLDEN)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class KeyedRNG:
    """Vectorised random draws for a batch of K levels, one independent stream per level key.

    Every method returns one row per level. The sequence of calls is part of a task's level
    definition: drawing in a different order gives different (equally valid) levels.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.counter = 0

    def __len__(self) -> int:
        return len(self.keys)

    def bits(self, m: int) -> np.ndarray:
        """(K, m) uniformly random uint64."""
        ctr = np.arange(self.counter + 1, self.counter + m + 1, dtype=np.uint64)
        self.counter += m
        return mix64(self.keys[:, None] + ctr[None, :] * _GOLDEN)

    def uniform(self, m: int = 1) -> np.ndarray:
        """(K, m) floats in [0, 1)."""
        return (self.bits(m) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, high: int | np.ndarray, m: int = 1) -> np.ndarray:
        """(K, m) integers in [0, high); ``high`` may be a (K,) array."""
        h = np.asarray(high, dtype=np.int64).reshape(-1, 1)
        return np.minimum((self.uniform(m) * h).astype(np.int64), np.maximum(h - 1, 0))

    def permutation(self, m: int) -> np.ndarray:
        """(K, m): a uniform random permutation of range(m) per level."""
        return np.argsort(self.uniform(m), axis=1, kind="stable")

    def choice(self, mask: np.ndarray) -> np.ndarray:
        """(K,) index of a uniformly chosen True entry of each row of ``mask`` (-1 if none)."""
        return self.choose_distinct(mask, 1)[:, 0]

    def choose_distinct(self, mask: np.ndarray, n: int) -> np.ndarray:
        """(K, n) indices of n distinct True entries per row, uniformly (-1 where too few).

        Pick j takes the r-th of the entries still free, r = ``integers(free count)``, one draw per
        pick (as n calls of :meth:`choice`, each removing its pick, would). Done without n passes
        over the mask: r becomes a rank among all the row's True entries by stepping over the
        earlier picks that lie at or below it, and the rank becomes a column through one
        ``flatnonzero`` of the mask."""
        mask = mask.reshape(len(self), -1)
        counts = np.count_nonzero(mask, axis=1)
        cells = np.flatnonzero(mask)  # row-major: row i's True entries, in order, from first[i] on
        first = np.cumsum(counts) - counts
        left = np.maximum(counts[:, None] - np.arange(n), 0)  # (K, n) free entries before pick j
        u = self.uniform(n)
        rank = np.minimum((u * left).astype(np.int64), np.maximum(left - 1, 0))
        for j in range(1, n):
            earlier = np.sort(rank[:, :j], axis=1)
            for i in range(j):  # ascending: each earlier pick at or below the rank pushes it up by one
                rank[:, j] += earlier[:, i] <= rank[:, j]
        ok = left > 0
        flat = cells[np.where(ok, first[:, None] + rank, 0)] if len(cells) else 0
        return np.where(ok, flat - np.arange(len(self))[:, None] * mask.shape[1], -1)
