# ruff: noqa: E402
"""Scratch: the pinned trajectory digest (tests/test_rng.py) with compiled_body.CompiledCore."""

import hashlib
import sys

import torch

sys.argv = sys.argv[:1]
import compiled_body as S

import capgap.envs as E

for env_id in sys.argv_envs if hasattr(sys, "argv_envs") else list(E.TASKS):
    cls = E.task_class(env_id)
    for split in ("train", "test"):
        core = S.CompiledCore(cls.from_dials(), 64, split, 0, "cpu", True).compile()
        core.reset(7)
        g = torch.Generator().manual_seed(1)
        h = hashlib.sha256()
        try:
            for _ in range(300):
                reward, terminated, truncated = core.step(torch.randint(0, 4, (64,), generator=g))
                e = core.episodes
                floats = (torch.stack([reward, e.goal_score, e.capability_score]) * 1e4).round().long()
                for t in (core.obs, terminated, truncated, e.done, e.outcome, floats):
                    h.update(t.contiguous().numpy().tobytes())
            d = h.hexdigest()[:16]
            print(
                env_id,
                split,
                d,
                "== pinned" if d == cls.digests[split] else f"!= pinned {cls.digests[split]}",
                flush=True,
            )
        except Exception as ex:
            print(env_id, split, "FAILED:", type(ex).__name__, str(ex).splitlines()[0][:200], flush=True)
