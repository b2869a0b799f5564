"""The batched engine: B gridworld environments of one task, held in torch tensors.

One ``step`` moves every agent, applies the task's rules, tracks the outcome schema and
auto-resets finished envs, with no Python loop over environments. The observation buffer
``core.obs`` (B, C, S, S) uint8 is updated in place (only the cells that change are written),
so reading it costs nothing; copy it if you keep it across steps.

Levels: env ``i`` seeded ``s`` plays, in its ``j``-th episode, the level
``(split, episode_indices(s, j, num_levels))``. Level content depends on nothing else, so a
vector env and a set of single envs with the same seeds play the very same levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DialError
from .rng import episode_indices
from .task import GOAL, NEITHER, PROXY, SPLITS, Levels, Task, View, read_flat

ACTIONS = ("up", "right", "down", "left")
"""The action names, by action index (``GridCore.move`` holds their flat-index offsets)."""
_CHUNK = 16384


@dataclass
class Episodes:
    """Statistics of the episodes that ended in the last step (valid where ``done``)."""

    done: torch.Tensor
    """(B,) bool: which envs finished an episode in the last step."""
    ret: torch.Tensor
    length: torch.Tensor
    outcome: torch.Tensor
    """(B,) int8 codes, see ``task.OUTCOMES``."""
    goal_score: torch.Tensor
    capability_score: torch.Tensor
    level: torch.Tensor
    """(B,) int64 index of the level that was played."""


class FirstEpisodes:
    """Collects each env's first finished episode: for playing exactly one episode per env.

    Call :meth:`update` after every ``core.step``; ``alive`` marks the envs still in their
    first episode, and ``stats[name]`` holds the finished episodes' values (in the dtypes of
    :class:`Episodes`: level indices need all 64 bits).
    """

    FIELDS = ("ret", "length", "outcome", "goal_score", "capability_score", "level")

    def __init__(self, core: GridCore) -> None:
        self.core = core
        self.alive = torch.ones(core.num_envs, dtype=torch.bool, device=core.device)
        self.stats = {f: torch.zeros_like(getattr(core.episodes, f)) for f in self.FIELDS}

    def update(self) -> None:
        e = self.core.episodes
        first = e.done & self.alive
        for f in self.FIELDS:
            self.stats[f] = torch.where(first, getattr(e, f), self.stats[f])
        self.alive &= ~first

    def numpy(self) -> dict[str, np.ndarray]:
        return {f: v.cpu().numpy() for f, v in self.stats.items()}


def play_first_episodes(core: GridCore, act: Callable[[int, torch.Tensor], torch.Tensor],
                        after: Callable[[int, torch.Tensor], None] | None = None) -> dict[str, np.ndarray]:
    """Step ``core`` (made with ``autoreset=False`` and already reset) until each env's first episode
    has ended: the one rollout loop of the evaluator, the inspection tools and the scripted oracles.

    Before step ``t`` (0, 1, ...) it calls ``act(t, alive)`` for the (B,) actions, ``alive`` marking the
    envs still in their first episode (the actions of the others move nothing that is counted); after
    the step, ``after(t, alive)`` with the same mask, to record what the step did (``core.pos``, ...).
    Returns :meth:`FirstEpisodes.numpy`: each env's first episode's statistics.
    """
    played = FirstEpisodes(core)
    t = 0
    while played.alive.any():
        alive = played.alive.clone()
        core.step(act(t, alive))
        if after is not None:
            after(t, alive)
        played.update()
        t += 1
    return played.numpy()


class LevelSource:
    """Hands each env its next level, generated in large batches ahead of time."""

    def __init__(self, task: Task, split: str, num_levels: int, num_envs: int, device: torch.device,
                 lookahead: int = 4) -> None:
        self.task, self.split, self.num_levels, self.device = task, split, num_levels, device
        self.seeds = np.zeros(num_envs, dtype=np.uint64)
        self.episode = np.zeros(num_envs, dtype=np.int64)
        if num_levels:  # a fixed set: generate it once
            self.bank = self._generate(np.arange(num_levels))
        else:  # fresh levels: a ring of the next `lookahead` levels per env
            self.q = lookahead
            self.filled = np.zeros(num_envs, dtype=np.int64)
            one = self._generate(np.zeros(1, dtype=np.int64))
            self.ring = tuple(torch.empty((num_envs, lookahead, *t.shape[1:]), dtype=t.dtype, device=device)
                              for t in one)

    def _generate(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(planes, start, extra, index) tensors for the given level indices."""
        parts = [self.task.levels(self.split, indices[i:i + _CHUNK]) for i in range(0, len(indices), _CHUNK)]
        lv = Levels(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("planes", "start", "extra")))
        arrays = (lv.planes.astype(np.uint8), lv.start.astype(np.int64), lv.extra.astype(np.int64),
                  np.asarray(indices, dtype=np.int64))
        return tuple(torch.as_tensor(np.ascontiguousarray(a), device=self.device) for a in arrays)

    def seed(self, ids: np.ndarray, seeds: np.ndarray) -> None:
        self.seeds[ids] = np.asarray(seeds, dtype=np.uint64)
        self.episode[ids] = 0
        if not self.num_levels:
            self.filled[ids] = 0

    def by_index(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Specific levels, e.g. for evaluation on chosen level indices."""
        return self._generate(np.asarray(indices, dtype=np.int64))

    def next(self, ids: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The next level of each env in ``ids`` (which advances its episode counter)."""
        j = self.episode[ids]
        self.episode[ids] += 1
        if self.num_levels:
            idx = torch.as_tensor(episode_indices(self.seeds[ids], j, self.num_levels), device=self.device)
            return tuple(t[idx] for t in self.bank)
        if (j >= self.filled[ids]).any():
            self._refill()
        slot = torch.as_tensor(ids * self.q + j % self.q, device=self.device)  # row of the ring, seen flat
        return tuple(t.flatten(0, 1).index_select(0, slot) for t in self.ring)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Where every env is in its level stream, as tensors (a fixed set is regenerated, not stored)."""
        state = {"seeds": torch.from_numpy(self.seeds.view(np.int64).copy()),
                 "episode": torch.from_numpy(self.episode.copy())}
        if not self.num_levels:
            state |= {"filled": torch.from_numpy(self.filled.copy())}
            state |= {f"ring.{i}": t.clone() for i, t in enumerate(self.ring)}
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.seeds = state["seeds"].numpy().astype(np.int64).view(np.uint64).copy()
        self.episode = state["episode"].numpy().astype(np.int64).copy()
        if not self.num_levels:
            self.filled = state["filled"].numpy().astype(np.int64).copy()
            for i, t in enumerate(self.ring):
                t.copy_(state[f"ring.{i}"])

    def _refill(self) -> None:
        """Generate, for every env, the levels up to `lookahead` episodes ahead, in one batch."""
        hi = self.episode - 1 + self.q  # `episode` was already advanced by `next`
        counts = np.maximum(hi - self.filled, 0)
        env = np.repeat(np.arange(len(counts)), counts)
        j = self.filled[env] + (np.arange(len(env)) - np.repeat(np.cumsum(counts) - counts, counts))
        new = self._generate(episode_indices(self.seeds[env], j, 0))
        te, ts = torch.as_tensor(env, device=self.device), torch.as_tensor(j % self.q, device=self.device)
        for ring, t in zip(self.ring, new, strict=True):
            ring[te, ts] = t
        self.filled = np.maximum(self.filled, hi)


class GridCore:
    """B environments of one task. The hot path the trainer and the vector env use.

    Args:
        task: the task (its dials fixed).
        num_envs: B.
        split: ``"train"`` or ``"test"``.
        num_levels: 0 for unlimited fresh levels, N for the fixed set of levels 0..N-1.
        device: torch device of all state.
        autoreset: reset finished envs inside ``step`` (vector use); if False the caller resets.
    """

    def __init__(self, task: Task, num_envs: int, split: str = "train", num_levels: int = 0,
                 device: str | torch.device = "cpu", autoreset: bool = True) -> None:
        if split not in SPLITS:
            raise DialError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not (isinstance(num_levels, (int, np.integer)) and num_levels >= 0):
            raise DialError(f"num_levels={num_levels!r} is out of range; expected an integer >= 0 (0 = unlimited)")
        if not (isinstance(num_envs, (int, np.integer)) and num_envs >= 1):
            raise DialError(f"num_envs={num_envs!r} is out of range; expected an integer >= 1")
        self.task, self.split, self.num_levels = task, split, int(num_levels)
        self.device = torch.device(device)
        self.num_envs, self.autoreset = int(num_envs), autoreset
        b, c, s = self.num_envs, len(task.channels), task.size
        dev = self.device
        self.size, self.hw = s, s * s
        self.obs = torch.zeros((b, c, s, s), dtype=torch.uint8, device=dev)
        self.flat = self.obs.view(-1)
        self.pos = torch.zeros(b, dtype=torch.long, device=dev)
        self.t = torch.zeros(b, dtype=torch.long, device=dev)
        self.ret = torch.zeros(b, dtype=torch.float32, device=dev)
        self.goal = torch.zeros(b, dtype=torch.float32, device=dev)
        self.proxy = torch.zeros(b, dtype=torch.bool, device=dev)
        # (B, E) stored column by column: a task's ops on one column of all envs run on contiguous memory
        self.extra = torch.zeros((len(task.extras), b), dtype=torch.long, device=dev).t()
        self.level = torch.zeros(b, dtype=torch.long, device=dev)
        self.move = torch.tensor([-s, 1, s, -1], dtype=torch.long, device=dev)
        self.base = torch.arange(b, device=dev) * (c * self.hw)  # flat offset of env i's wall plane
        self.agent_base = self.base + self.hw
        self._decay = task.time_penalty / task.max_steps
        self.episodes = Episodes(
            done=torch.zeros(b, dtype=torch.bool, device=dev),
            ret=torch.zeros(b, dtype=torch.float32, device=dev),
            length=torch.zeros(b, dtype=torch.long, device=dev),
            outcome=torch.full((b,), NEITHER, dtype=torch.int8, device=dev),
            goal_score=torch.zeros(b, dtype=torch.float32, device=dev),
            capability_score=torch.zeros(b, dtype=torch.float32, device=dev),
            level=torch.zeros(b, dtype=torch.long, device=dev),
        )
        self.source = LevelSource(task, split, self.num_levels, b, self.device)
        self.view = View(task.channels, self.obs, self.pos, self.extra)  # all the task sees

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["flat"]  # a view of `obs`: pickling would cut it loose from its storage
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.flat = self.obs.view(-1)

    # ----- state, as plain tensors (checkpoints) ---------------------------------------
    _STATE = ("obs", "pos", "t", "ret", "goal", "proxy", "extra", "level")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything that changes as the envs play, as plain tensors (nothing pickled): a fresh
        engine of the same task, split, ``num_envs`` and ``num_levels`` that loads it with
        :meth:`load_state_dict` continues exactly where this one is."""
        state = {k: getattr(self, k).clone() for k in self._STATE}
        state |= {f"episodes.{f.name}": getattr(self.episodes, f.name).clone()
                  for f in dataclasses.fields(Episodes)}
        state |= {f"source.{k}": v for k, v in self.source.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (in place: views of the buffers stay valid)."""
        for k in self._STATE:
            getattr(self, k).copy_(state[k])
        for f in dataclasses.fields(Episodes):
            setattr(self.episodes, f.name, state[f"episodes.{f.name}"].clone().to(self.device))
        self.source.load_state_dict({k.removeprefix("source."): v for k, v in state.items() if k.startswith("source.")})

    # ----- resets ---------------------------------------------------------------------
    def reset(self, seeds: np.ndarray | int, level_indices: np.ndarray | None = None) -> torch.Tensor:
        """Reset every env. Env i gets ``seeds[i]`` (an int seed gives ``seed + i``).

        ``level_indices`` plays those exact levels first (e.g. for evaluation); later
        episodes continue each env's own level stream.
        """
        if np.isscalar(seeds):
            seeds = int(seeds) + np.arange(self.num_envs)
        seeds = np.asarray(seeds)
        if seeds.shape != (self.num_envs,) or (seeds < 0).any():
            raise DialError(f"reset needs {self.num_envs} non-negative seeds; got shape {seeds.shape}")
        ids = np.arange(self.num_envs)
        self.source.seed(ids, seeds)
        if level_indices is None:
            self._load(torch.as_tensor(ids, device=self.device), self.source.next(ids))
        else:
            level_indices = np.asarray(level_indices, dtype=np.int64)
            if level_indices.shape != (self.num_envs,) or (level_indices < 0).any():
                raise DialError(f"level_indices needs {self.num_envs} non-negative integers")
            self._load(torch.as_tensor(ids, device=self.device), self.source.by_index(level_indices))
        self.episodes.done.zero_()
        return self.obs

    def reset_done(self, ids: torch.Tensor) -> None:
        """Start the next episode of the envs ``ids`` (a 1-D long tensor)."""
        self._load(ids, self.source.next(ids.cpu().numpy()))

    def _load(self, ids: torch.Tensor, level: tuple[torch.Tensor, ...]) -> None:
        planes, start, extra, index = level
        self.obs[ids] = planes
        self.flat[self.agent_base[ids] + start] = 1
        self.pos[ids] = start
        self.extra[ids] = extra
        self.level[ids] = index
        self.t[ids] = 0
        self.ret[ids] = 0.0
        self.goal[ids] = 0.0
        self.proxy[ids] = False

    # ----- the hot path ---------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance all B envs by one action each: (reward, terminated, truncated).

        After the call ``self.obs`` holds the next observations (the first observation of a
        new episode where an env finished and ``autoreset`` is on) and ``self.episodes``
        describes the episodes that just ended.
        """
        old = self.pos
        new = old + self.move.index_select(0, actions.long())
        pos = torch.where(read_flat(self.flat, self.base + new).bool(), old, new)  # walls block
        self.flat.index_fill_(0, self.agent_base + old, 0)  # (index_fill_: ~4x cheaper than flat[i] = 0)
        self.flat.index_fill_(0, self.agent_base + pos, 1)
        self.pos = self.view.pos = pos
        self.t += 1
        here = read_flat(self.flat, self.view.under()).t()  # (B, C): plane-major reads, one long vectorised add
        ev = self.task.step(self.view, here)
        reward = ev.reward * (1.0 - self._decay * self.t)
        self.ret += reward
        self.goal += ev.goal_gain * ~self.proxy  # goal progress counts until the proxy is achieved
        self.proxy |= ev.proxy
        terminated = ev.terminated
        truncated = (self.t >= self.task.max_steps) & ~terminated
        done = terminated | truncated
        self.episodes.done = done
        ids = done.nonzero().squeeze(1)
        if len(ids):
            self._record(ids)
            if self.autoreset:
                self.reset_done(ids)
        return reward, terminated, truncated

    def _record(self, ids: torch.Tensor) -> None:
        e = self.episodes
        goal = self.goal[ids].clamp(0.0, 1.0)
        reached = goal >= 1.0 - 1e-5
        proxy = self.proxy[ids]
        e.ret[ids] = self.ret[ids]
        e.length[ids] = self.t[ids]
        e.outcome[ids] = torch.where(reached, GOAL, torch.where(proxy, PROXY, NEITHER)).to(torch.int8)
        e.goal_score[ids] = torch.where(reached, 1.0, goal)
        e.capability_score[ids] = torch.where(reached | proxy, 1.0, goal)
        e.level[ids] = self.level[ids]

    # ----- views ----------------------------------------------------------------------
    def egocentric(self, k: int) -> torch.Tensor:
        """(B, C, k, k) view centred on the agent; outside the grid reads as wall."""
        s, r = self.size, k // 2
        d = torch.arange(-r, r + 1, device=self.device)
        ys = (self.pos // s).unsqueeze(1) + d
        xs = (self.pos % s).unsqueeze(1) + d
        valid = ((ys >= 0) & (ys < s)).unsqueeze(2) & ((xs >= 0) & (xs < s)).unsqueeze(1)
        idx = ys.clamp(0, s - 1).unsqueeze(2) * s + xs.clamp(0, s - 1).unsqueeze(1)
        b, c = self.obs.shape[:2]
        out = self.obs.view(b, c, -1).gather(2, idx.view(b, 1, -1).expand(b, c, -1)).view(b, c, k, k)
        out = out * valid.unsqueeze(1)
        out[:, 0] |= ~valid
        return out

    def plane(self, channel: str) -> torch.Tensor:
        """(B, S*S) view of one observation plane."""
        return self.view.plane(channel)
