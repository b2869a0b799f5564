"""Play a policy on a batch of fresh levels and read C, A and the proxy rate off the episodes.

Used by the trainer's live evaluation and by the evaluator. One episode per env, all envs in
one batched engine; the policy samples its actions from its own seeded generator, so an
evaluation never disturbs the training run's random state and is reproducible on its own.

Evaluation levels are disjoint from training levels: eval envs are seeded from
``EVAL_SEED_BASE`` (training envs from small integers), and levels are drawn from the whole
index space [0, 2^62), so they coincide with a fixed training set [0, num_levels) with
probability num_levels / 2^62.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from capgap.envs import NEITHER, OUTCOMES, PROXY, make_core, render
from capgap.envs.core import play_first_episodes
from capgap.eval.records import SPLIT_METRICS, episode_record

EVAL_SEED_BASE = 1 << 40


@dataclass
class EvalResult:
    """Per-episode results of one evaluation (arrays of length ``episodes``)."""

    split: str
    outcome: np.ndarray
    goal_score: np.ndarray
    capability_score: np.ndarray
    ret: np.ndarray
    length: np.ndarray
    level: np.ndarray
    visits: np.ndarray = field(repr=False)
    """(S, S) mean visits per episode of each cell: where the agent goes."""
    first_planes: np.ndarray = field(repr=False)
    """(C, S, S) the first episode's initial observation."""
    first_path: list[int] = field(repr=False)
    """The first episode's agent positions (flat indices), start included."""

    def records(self, meta: dict[str, Any], step: int) -> list[dict[str, Any]]:
        """One episode record per episode (``capgap.eval.records.EPISODE_KEYS``)."""
        return [episode_record(meta, step, self.split, i, int(self.level[i]), {
                    "outcome": OUTCOMES[int(self.outcome[i])], "goal_score": float(self.goal_score[i]),
                    "capability_score": float(self.capability_score[i]), "return": float(self.ret[i]),
                    "length": int(self.length[i])}) for i in range(len(self.outcome))]

    def metrics(self) -> dict[str, float]:
        """C, A, proxy and neither rates, return and length (``SPLIT_METRICS``), averaged over the episodes."""
        values = (self.capability_score.mean(), self.goal_score.mean(), (self.outcome == PROXY).mean(),
                  (self.outcome == NEITHER).mean(), self.ret.mean(), self.length.mean())
        return {m: float(v) for m, v in zip(SPLIT_METRICS, values, strict=True)}


@torch.no_grad()
def evaluate(agent: torch.nn.Module, env_id: str, split: str, episodes: int, dials: dict[str, Any],
             seed: int = 0, device: str = "cpu") -> EvalResult:
    """One episode on each of ``episodes`` fresh levels of ``split``, actions sampled from the policy."""
    core = make_core(env_id, episodes, split=split, device=device, autoreset=False, **dials)
    core.reset(EVAL_SEED_BASE + np.arange(episodes))
    gen = torch.Generator(device=device).manual_seed(seed)
    s = core.size
    visits = torch.zeros(s * s, dtype=torch.float64, device=device)
    planes = core.obs[0].cpu().numpy().copy()
    path = [int(core.pos[0])]
    visits.index_add_(0, core.pos, torch.ones(episodes, dtype=torch.float64, device=device))
    actions = torch.zeros(episodes, dtype=torch.long, device=device)

    def act(t: int, alive: torch.Tensor) -> torch.Tensor:
        idx = alive.nonzero().squeeze(1)  # finished envs wait (their moves count nowhere)
        logits, _ = agent(core.obs[idx])
        actions[idx] = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)
        return actions

    def after(t: int, alive: torch.Tensor) -> None:
        if alive[0]:
            path.append(int(core.pos[0]))
        visits.index_add_(0, core.pos, alive.double())

    out = play_first_episodes(core, act, after)
    return EvalResult(
        split=split, outcome=out["outcome"].astype(np.int8), goal_score=out["goal_score"].astype(np.float32),
        capability_score=out["capability_score"].astype(np.float32), ret=out["ret"].astype(np.float32),
        length=out["length"].astype(np.int64), level=out["level"],
        visits=(visits / episodes).view(s, s).cpu().numpy(), first_planes=planes, first_path=path,
    )


def heatmap(visits: np.ndarray, tile: int = 12) -> np.ndarray:
    """(S*tile, S*tile, 3) uint8 picture of mean visits per cell (log scale, dark = never)."""
    v = np.log1p(visits)
    v = v / max(float(v.max()), 1e-9)
    # a small perceptual ramp: black -> purple -> orange -> yellow
    stops = np.array([[0, 0, 0], [90, 20, 140], [230, 100, 40], [255, 240, 120]], dtype=np.float64)
    x = v * (len(stops) - 1)
    i = np.clip(x.astype(int), 0, len(stops) - 2)
    f = (x - i)[..., None]
    rgb = stops[i] * (1 - f) + stops[i + 1] * f
    return np.kron(rgb, np.ones((tile, tile, 1))).astype(np.uint8)


def trajectory(result: EvalResult, channels: tuple[str, ...], tile: int = 16) -> np.ndarray:
    """The first evaluation episode's level with the agent's path drawn on it (HWC uint8)."""
    img = render.rgb(result.first_planes, channels, tile).copy()
    s = result.first_planes.shape[-1]
    for k, p in enumerate(result.first_path):
        y, x = divmod(p, s)
        shade = int(80 + 175 * k / max(len(result.first_path) - 1, 1))
        c = tile // 2
        img[y * tile + c - 2:y * tile + c + 2, x * tile + c - 2:x * tile + c + 2] = (shade, 40, 255 - shade)
    return img

