"""Level randomness: the fast draws equal their definitions, and every env's trajectories are pinned."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import capgap.envs as E
from capgap.envs.rng import KeyedRNG


def choose_distinct_by_definition(rng: KeyedRNG, mask: np.ndarray, n: int) -> np.ndarray:
    """n picks, each a uniform draw among the entries still free, removing the pick: the definition."""
    mask = mask.reshape(len(rng), -1).copy()
    out = np.full((len(rng), n), -1)
    for j in range(n):
        counts = mask.sum(1)
        r = rng.integers(counts)[:, 0]
        pick = np.argmax(np.cumsum(mask, axis=1) > r[:, None], axis=1)
        ok = counts > 0
        out[ok, j] = pick[ok]
        mask[np.flatnonzero(ok), pick[ok]] = False
    return out


def test_choose_distinct_is_the_sequential_definition() -> None:
    g = np.random.default_rng(0)
    for _ in range(200):
        k, cells, n = int(g.integers(1, 60)), int(g.integers(1, 90)), int(g.integers(1, 14))
        mask = g.uniform(size=(k, cells)) < g.uniform()  # includes rows with no or too few entries
        keys = g.integers(0, 2**63, k).astype(np.uint64)
        fast, slow = KeyedRNG(keys), KeyedRNG(keys)
        np.testing.assert_array_equal(fast.choose_distinct(mask, n), choose_distinct_by_definition(slow, mask, n))
        assert fast.counter == slow.counter
        np.testing.assert_array_equal(fast.choice(mask), choose_distinct_by_definition(slow, mask, 1)[:, 0])


def test_choose_distinct_picks_are_distinct_true_entries() -> None:
    mask = np.zeros((3, 10), bool)
    mask[0, [1, 4, 7]] = True
    mask[1, [2]] = True
    out = KeyedRNG(np.arange(3, dtype=np.uint64)).choose_distinct(mask, 3)
    assert sorted(out[0]) == [1, 4, 7] and out[1].tolist() == [2, -1, -1] and out[2].tolist() == [-1, -1, -1]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
"""The engine is device-agnostic: on a machine with a GPU the same trajectories are checked there."""


def trajectory_digest(env_id: str, split: str, device: str = "cpu") -> str:
    core = E.make_core(env_id, 64, split=split, device=device)
    core.reset(7)
    g = torch.Generator().manual_seed(1)
    h = hashlib.sha256()
    for _ in range(300):
        reward, terminated, truncated = core.step(torch.randint(0, 4, (64,), generator=g).to(device))
        e = core.episodes
        floats = torch.stack([reward, e.goal_score, e.capability_score])
        floats = (floats * 1e4).round().long()  # to 1e-4: the last bit of a float may differ between CPUs
        for t in (core.obs, terminated, truncated, e.done, e.outcome, floats):
            h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("env_id", list(E.TASKS))
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("device", DEVICES)
def test_trajectories_are_pinned(env_id: str, split: str, device: str) -> None:
    """Levels and rules are part of every published figure: a speed-up must not change a single
    step. A deliberate change of an env (or a new env) pins its digests in its class, and says so."""
    digest = trajectory_digest(env_id, split, device)
    cls = E.task_class(env_id)
    pinned = cls.digests.get(split)
    if pinned is None:
        pins = {s: trajectory_digest(env_id, s, device) for s in ("train", "test")}
        pytest.fail(f"{env_id} pins no digest for its {split} split: add `digests = {pins!r}` to class {cls.__name__}")
    assert pinned == digest, (
        f"{env_id} {split} plays differently: digest {digest}, pinned {pinned} ({cls.__name__}.digests). If the "
        "change is deliberate (the results in docs/results.md then need rerunning), pin the new "
        "digest and say why in the env's docstring")
