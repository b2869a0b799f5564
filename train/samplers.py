"""Level samplers: which level each training episode plays.

The engine's :class:`~capgap.envs.core.LevelSource` gives every env a fresh level per episode, a pure
function of (env seed, episode number): that is **domain randomisation** (``dr``, the default), where
the disambiguating levels (goal and proxy apart) come at the rate ``p_disambiguate`` = α and no more.
A sampler here wraps that source. At each new episode an env flips a coin (a pure function of its seed
and episode number, so nothing random needs saving); with probability ``replay_prob`` it replays a level
of a *replay set* instead of its next fresh level (the fresh one is skipped, so the fresh stream stays
the same). Two replay sets:

- :class:`PLR`, **prioritised level replay** (Jiang et al. 2021, ``--sampler plr``): a buffer of the
  ``buffer_size`` highest-scoring levels seen, by index (a level is a pure function of (env, split,
  index), so an index *is* a level). A level's score is its learning potential, measured on its last
  episode from the rollout's own numbers: ``pvl``, the positive value loss (the mean of the episode's
  GAE advantages clipped at 0), or ``maxmc`` (the mean gap between the best return ever seen on the
  level and the value estimates). Replays draw by rank: P = (1 - ρ) P_score + ρ P_stale, with
  P_score ∝ (1 / rank)^(1/β) (β = ``temperature``) and P_stale ∝ episodes since the level was last
  drawn (ρ = ``staleness``). Replay starts once the buffer is ``MIN_FILL`` full.
- ``--sampler plr-oracle``: the same buffer scored by **exact regret**, the oracle goal-seeker's return
  on the level (BFS: :func:`capgap.envs.oracle.returns`) minus the agent's. On a disambiguating level a
  proxy-seeker earns nothing and its regret is the whole optimal return, which is why regret-seeking
  samplers replay the rare disambiguating levels (Abdel Sadek et al. 2025).
- :class:`FixedMix`, the **repair mix** (``--repair-levels K``): K fixed levels made with other dials
  (``--repair-dials``, default ``p_disambiguate=1``: goal and proxy apart), replayed uniformly; the other
  episodes play the run's own distribution, so a repair keeps the original task in view.

With ``robust`` (PLR⊥, Jiang et al. 2021b) the policy takes no gradient from fresh levels: they are only
played to be scored (:meth:`Sampler.weights` masks them out of the losses), so the agent learns only on
the curriculum. The trainer calls a sampler at three points (``train/ppo.py``): :meth:`Sampler.record`
after every engine step, :meth:`Sampler.update` after GAE, and :meth:`Sampler.scalars` for the logs
(``levels/*``). ``dr`` is :class:`Sampler` itself, which does nothing: its runs are bit-identical to runs
from before samplers existed. A sampler's state (buffer, per-env accumulators) is part of the engine's
``state_dict``, seed-major, so a killed run resumes with it, alone or in a seed group.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from capgap.envs import Task, parse_dials, task_class
from capgap.envs.core import GridCore, LevelSource
from capgap.envs.rng import keyed_uniform

SAMPLERS: tuple[str, ...] = ("dr", "plr", "plr-oracle")
"""The level samplers ``capgap train --sampler`` takes."""
SCORES: tuple[str, ...] = ("pvl", "maxmc")
"""PLR's learning-potential scores (``--plr-score``): positive value loss, or MaxMC."""
PLR_SETTINGS: tuple[str, ...] = ("plr_score", "replay_prob", "buffer_size", "staleness", "temperature", "robust")
"""The ``Args`` fields that only PLR reads."""
MIN_FILL = 0.5
"""PLR replays only once its buffer holds this fraction of ``buffer_size`` levels (as jaxued's maze example)."""


class Sampler:
    """Domain randomisation (``dr``): every episode plays its env's next fresh level. The base class of
    the samplers: each hook is a no-op here, so a ``dr`` run computes exactly what it always did."""

    def record(self, t: int) -> None:
        """After the rollout's step ``t``: note which level each transition was played on."""

    def update(self, advantages: torch.Tensor, values: torch.Tensor) -> None:
        """After GAE, with the rollout's (S, T, N) advantages and values: score the finished episodes."""

    def weights(self) -> torch.Tensor | None:
        """(S, T * N) per-transition loss weights in the rollout's order (PLR⊥: 0 on fresh levels), or
        None: every transition counts."""
        return None

    def scalars(self) -> dict[str, list[float | None]]:
        """``levels/*`` scalars per seed since the last call (none for ``dr``)."""
        return {}


class Replay(Sampler):
    """A sampler that replays a level of its replay set with probability ``prob`` at each new episode.

    It takes the engine's level source's place (same interface: ``next``, ``seed``, ``by_index``,
    ``state_dict``), so the engine is unchanged. ``seeds`` splits the engine's envs into the seed
    group's S seeds (env ``i`` is seed ``i // N``'s), each with its own replay state.
    """

    def __init__(self, core: GridCore, seeds: int, prob: float) -> None:
        self.core, self.source = core, core.source
        self.size, self.n = seeds, core.num_envs // seeds
        self.prob = prob
        self.flag = torch.zeros(core.num_envs, dtype=torch.bool, device=core.device)
        """(B,) the level each env plays now is a replay."""
        self.ended = self.flag.clone()  # where an env's episode just ended: whether that one was a replay
        self.started = np.zeros((seeds, 2), dtype=np.int64)  # per seed since the last log: episodes, replays
        self.clock = np.zeros(seeds, dtype=np.int64)  # per seed: episodes started (PLR's staleness clock)
        core.source = self  # type: ignore[assignment]  # the engine now asks this sampler for its levels

    # ----- the level source interface ------------------------------------------------------------
    def seed(self, ids: np.ndarray, seeds: np.ndarray) -> None:
        self.source.seed(ids, seeds)

    def by_index(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        return self.source.by_index(indices)

    def next(self, ids: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The next level of each env in ``ids``: its fresh one, or a replay."""
        ids = np.asarray(ids, dtype=np.int64)
        level = self.source.next(ids)  # always advances the fresh stream: it stays a function of the episode
        episode = self.source.episode[ids] - 1
        seed_of = ids // self.n
        replay = (keyed_uniform(self.source.seeds[ids], episode, "replay") < self.prob) & self.ready(seed_of)
        np.add.at(self.started, (seed_of, 0), 1)
        np.add.at(self.clock, seed_of, 1)
        np.add.at(self.started, (seed_of[replay], 1), 1)
        at = torch.as_tensor(ids, device=self.flag.device)
        self.ended[at] = self.flag[at]
        self.flag[at] = torch.as_tensor(replay, device=self.flag.device)
        if replay.any():
            rows = np.flatnonzero(replay)
            u = keyed_uniform(self.source.seeds[ids[rows]], episode[rows], "pick")
            picked = self.pick(seed_of[rows], u)
            r = torch.as_tensor(rows, device=self.flag.device)
            for t, new in zip(level, picked, strict=True):
                t[r] = new
        return level

    def state_dict(self) -> dict[str, torch.Tensor]:
        own = {"flag": self.flag.clone(), "started": torch.from_numpy(self.started.copy()),
               "clock": torch.from_numpy(self.clock.copy())}
        return self.source.state_dict() | {f"sampler.{k}": v for k, v in (own | self.own_state()).items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.source.load_state_dict({k: v for k, v in state.items() if not k.startswith("sampler.")})
        own = {k.removeprefix("sampler."): v for k, v in state.items() if k.startswith("sampler.")}
        self.flag.copy_(own.pop("flag"))
        self.started = own.pop("started").numpy().copy()
        self.clock = own.pop("clock").numpy().copy()
        self.load_own(own)

    # ----- what a replay set implements --------------------------------------------------------------
    def ready(self, seed_of: np.ndarray) -> np.ndarray:
        """(K,) bool: whether each seed's replay set can be drawn from."""
        return np.ones(len(seed_of), dtype=bool)

    def pick(self, seed_of: np.ndarray, u: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The levels to replay, one per row (``seed_of``: its seed; ``u``: a uniform draw for it)."""
        raise NotImplementedError

    def own_state(self) -> dict[str, torch.Tensor]:
        """The replay set's state, every tensor seed-major or env-major (``capgap.train.seeds.core_slice``)."""
        return {}

    def load_own(self, state: dict[str, torch.Tensor]) -> None:
        pass

    # ----- the trainer's hooks ----------------------------------------------------------------------------
    def scalars(self) -> dict[str, list[float | None]]:
        started, self.started = self.started, np.zeros_like(self.started)
        return {"levels/replay_rate": [float(b / a) if a else None for a, b in started]}


class FixedMix(Replay):
    """The repair mix: ``k`` fixed levels of ``task`` (the run's env with other dials, e.g.
    ``p_disambiguate=1``), levels ``0..k-1`` of its training split, replayed uniformly with probability
    ``prob``; the other episodes play the run's own distribution."""

    def __init__(self, core: GridCore, seeds: int, prob: float, task: Task, k: int) -> None:
        super().__init__(core, seeds, prob)
        self.k = k
        self.bank = LevelSource(task, "train", k, 1, core.device).bank

    def pick(self, seed_of: np.ndarray, u: np.ndarray) -> tuple[torch.Tensor, ...]:
        slot = torch.as_tensor(np.minimum((u * self.k).astype(np.int64), self.k - 1), device=self.flag.device)
        return tuple(t[slot] for t in self.bank)


class PLR(Replay):
    """Prioritised level replay (the module docstring): one buffer of ``capacity`` levels per seed,
    scored by ``score`` (``pvl``, ``maxmc`` or ``regret``: exact regret against the oracle)."""

    def __init__(self, core: GridCore, seeds: int, prob: float, capacity: int, score: str, staleness: float,
                 temperature: float, robust: bool, num_steps: int) -> None:
        super().__init__(core, seeds, prob)
        self.capacity, self.kind, self.rho, self.beta = capacity, score, staleness, temperature
        self.robust = robust
        S, K, B, T = seeds, capacity, core.num_envs, num_steps
        self.index = np.zeros((S, K), dtype=np.int64)
        """Each seed's buffer: level indices (the first ``filled[s]`` slots are in use)."""
        self.score = np.zeros((S, K))
        self.stamp = np.zeros((S, K), dtype=np.int64)
        """The seed's episode clock when each level was last drawn (or entered)."""
        self.best = np.full((S, K), -np.inf)
        """The best return seen on each level (MaxMC's reference)."""
        self.opt = np.full((S, K), np.nan)
        """The oracle's return on each level (exact regret's reference; NaN unless ``regret``)."""
        self.apart = np.full((S, K), -1, dtype=np.int8)
        """1: goal and proxy apart on the level, 0: together, -1: not known."""
        self.filled = np.zeros(S, dtype=np.int64)
        self.acc = np.zeros((B, 3))
        """Per env, over its current episode so far: the sum of positive advantages, of values, and steps."""
        self.drawn = np.zeros((S, 2), dtype=np.int64)  # since the last log: replays of apart levels, of known ones
        self.slots: list[dict[int, int]] = [{} for _ in range(S)]  # level index -> buffer slot, per seed
        dev = core.device
        self.levels = torch.zeros((T, B), dtype=torch.long, device=dev)  # this rollout: each transition's level,
        self.replayed = torch.zeros((T, B), dtype=torch.bool, device=dev)  # whether that level was a replay,
        self.dones = torch.zeros((T, B), dtype=torch.bool, device=dev)  # whether its episode ended there,
        self.returns = torch.zeros((T, B), device=dev)  # and with what return

    # ----- drawing ----------------------------------------------------------------------------
    def ready(self, seed_of: np.ndarray) -> np.ndarray:
        return self.filled[seed_of] >= math.ceil(MIN_FILL * self.capacity)

    def probs(self, s: int) -> np.ndarray:
        """Seed ``s``'s replay distribution over its filled slots: (1 - ρ) P_score + ρ P_stale."""
        f = self.filled[s]
        rank = np.empty(f)
        rank[np.argsort(-self.score[s, :f], kind="stable")] = np.arange(1, f + 1)
        h = rank ** (-1.0 / self.beta)
        stale = (self.clock[s] - self.stamp[s, :f]).astype(np.float64)
        p_stale = stale / stale.sum() if stale.sum() > 0 else np.full(f, 1.0 / f)
        return (1 - self.rho) * h / h.sum() + self.rho * p_stale

    def pick(self, seed_of: np.ndarray, u: np.ndarray) -> tuple[torch.Tensor, ...]:
        index = np.empty(len(seed_of), dtype=np.int64)
        for s in np.unique(seed_of):
            rows = seed_of == s
            c = np.cumsum(self.probs(s))
            slot = np.minimum(np.searchsorted(c, u[rows] * c[-1], side="right"), self.filled[s] - 1)
            index[rows] = self.index[s, slot]
            self.stamp[s, slot] = self.clock[s]
            a = self.apart[s, slot]
            self.drawn[s] += ((a == 1).sum(), (a >= 0).sum())
        return self.source.by_index(index)

    # ----- scoring -----------------------------------------------------------------------------
    def record(self, t: int) -> None:
        e = self.core.episodes
        self.levels[t] = torch.where(e.done, e.level, self.core.level)
        self.replayed[t] = torch.where(e.done, self.ended, self.flag)
        self.dones[t] = e.done
        self.returns[t] = e.ret

    def update(self, advantages: torch.Tensor, values: torch.Tensor) -> None:
        S, T, N = advantages.shape
        adv = advantages.transpose(0, 1).reshape(T, S * N).double().cpu().numpy()
        val = values.transpose(0, 1).reshape(T, S * N).double().cpu().numpy()
        dones, levels = self.dones.cpu().numpy(), self.levels.cpu().numpy()
        returns = self.returns.double().cpu().numpy()
        ended: list[tuple[np.ndarray, ...]] = []  # (env, level, return, mean positive advantage, mean value)
        for t in range(T):  # in the order the episodes ended
            self.acc += np.stack([np.maximum(adv[t], 0.0), val[t], np.ones(S * N)], axis=1)
            ids = np.flatnonzero(dones[t])
            if ids.size:
                a = self.acc[ids]
                ended.append((ids, levels[t, ids], returns[t, ids], a[:, 0] / a[:, 2], a[:, 1] / a[:, 2]))
                self.acc[ids] = 0.0
        if ended:
            self._score(*(np.concatenate(column) for column in zip(*ended, strict=True)))

    def _score(self, env: np.ndarray, level: np.ndarray, ret: np.ndarray, pvl: np.ndarray, mean_v: np.ndarray) -> None:
        """Score the finished episodes, in order: update a buffered level's score, or buffer a new level
        (in a free slot, else in place of the lowest score if it beats it)."""
        seed_of = env // self.n
        slot = np.array([self.slots[s].get(i, -1) for s, i in zip(seed_of, level, strict=True)], dtype=np.int64)
        opt = np.full(len(level), np.nan)
        if self.kind == "regret":
            known = slot >= 0
            opt[known] = self.opt[seed_of[known], slot[known]]
            new = ~known
            if new.any():
                from capgap.envs import oracle

                opt[new] = oracle.returns(self.core.task, self.core.split, level[new])
        fresh_slots: list[tuple[int, int]] = []
        for k in range(len(level)):
            s, i = int(seed_of[k]), int(level[k])
            j = self.slots[s].get(i)
            best = max(ret[k], self.best[s, j]) if j is not None else ret[k]
            score = {"pvl": pvl[k], "maxmc": best - mean_v[k], "regret": opt[k] - ret[k]}[self.kind]
            if j is None:
                if self.filled[s] < self.capacity:
                    j = int(self.filled[s])
                    self.filled[s] += 1
                else:
                    j = int(np.argmin(self.score[s]))
                    if score <= self.score[s, j]:
                        continue
                    del self.slots[s][int(self.index[s, j])]
                self.slots[s][i] = j
                self.index[s, j], self.stamp[s, j], self.opt[s, j], self.apart[s, j] = i, self.clock[s], opt[k], -1
                fresh_slots.append((s, j))
            self.score[s, j], self.best[s, j] = score, best
        self._mark_apart(fresh_slots)

    def _mark_apart(self, slots: list[tuple[int, int]]) -> None:
        """Which of the newly buffered levels pull goal and proxy apart (regenerated: a level is its index)."""
        slots = sorted(set(slots))
        if not slots:
            return
        s, j = np.array(slots).T
        apart = self.core.task.levels(self.core.split, self.index[s, j]).apart
        self.apart[s, j] = -2 if apart is None else apart.astype(np.int8)

    def weights(self) -> torch.Tensor | None:
        if not self.robust:
            return None
        T = self.replayed.shape[0]
        return self.replayed.view(T, self.size, self.n).transpose(0, 1).reshape(self.size, T * self.n).float()

    def scalars(self) -> dict[str, list[float | None]]:
        out = super().scalars()
        drawn, self.drawn = self.drawn, np.zeros_like(self.drawn)
        out["levels/buffer_fill"] = [float(f / self.capacity) for f in self.filled]
        out["levels/buffer_score"] = [float(self.score[s, :f].mean()) if f else None for s, f in enumerate(self.filled)]
        apart = [self.apart[s, :f] for s, f in enumerate(self.filled)]
        out["levels/buffer_apart"] = [float((a == 1).sum() / (a >= 0).sum()) if (a >= 0).any() else None for a in apart]
        out["levels/replayed_apart"] = [float(a / k) if k else None for a, k in drawn]
        return out

    # ----- state --------------------------------------------------------------------------------------
    def own_state(self) -> dict[str, torch.Tensor]:
        arrays = {"index": self.index, "score": self.score, "stamp": self.stamp, "best": self.best, "opt": self.opt,
                  "apart": self.apart, "filled": self.filled, "acc": self.acc, "drawn": self.drawn}
        return {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}

    def load_own(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            setattr(self, k, v.numpy().copy())
        self.slots = [{int(i): j for j, i in enumerate(self.index[s, :f])} for s, f in enumerate(self.filled)]


def repair_task(args: Any) -> Task:
    """The task of a run's repair levels: its env with its dials, then ``args.repair_dials`` over them."""
    cls = task_class(args.env)
    return cls.from_dials(**{**parse_dials(args.dials), **parse_dials(args.repair_dials)})


def make(args: Any, core: GridCore, seeds: int) -> Sampler:
    """The sampler ``args`` asks for (``Args.sampler``, ``Args.repair_levels``), installed in ``core``
    (a seed group's engine of ``seeds`` x ``args.num_envs`` envs)."""
    if args.repair_levels:
        return FixedMix(core, seeds, args.repair_prob, repair_task(args), args.repair_levels)
    if args.sampler == "dr":
        return Sampler()
    score = "regret" if args.sampler == "plr-oracle" else args.plr_score
    return PLR(core, seeds, args.replay_prob, args.buffer_size, score, args.staleness, args.temperature,
               args.robust, args.num_steps)
