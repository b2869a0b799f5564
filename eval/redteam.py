"""The red team: search level space for the levels where a trained agent fails (``capgap redteam``).

A **failure** is a level on which the agent's episode does not end at the goal (it ends at the
proxy, or wanders until time runs out) while the scripted goal-seeker (``envs.oracle``) reaches
the goal on the very same level. The goal-seeker is played on every candidate level *before* the
agent, and a level it cannot solve is never played by the agent, so an unsolvable level can never
count as a failure, and every query is spent on a level the agent *could* have solved.

A **query** is one agent episode: the unit of the search budget. Oracle episodes, mutations and
the replays of the levels found (below) cost no queries. Actions are sampled from the policy, as
the evaluator samples them (``eval.rollout``), but each episode draws its uniforms from its own
key (``splitmix64(key + t)``), so an episode replays exactly, alone or in any batch.

What is searched (the *space*):

* the **level indices** of a split (every level is a pure function of (env, split, index));
* optionally **dials** (``dial_space``, e.g. ``{"corner_size": [1, 2, 3]}``): each candidate is
  drawn under one setting of them; a setting must keep the observation's shape (not ``size``,
  ``salience``), which the network was built for;
* **mutations** of a level (``eval.mutate``): move the goal, the proxy or another object, the start,
  or a maze wall, each edit checked to leave a legal level of the split.

Two searchers spend the same number of queries, ``budget``:

* ``random``: fresh level indices (and dial settings), uniformly: the baseline;
* ``guided``: an evolutionary search in the manner of ACCEL (Parker-Holder et al. 2022) with the
  *oracle's* exact regret as its fitness (Abdel Sadek et al. 2025 found ACCEL robust with oracle
  regret). Generation 0 is ``batch`` fresh levels; every later generation is ``batch`` children, a
  quarter of them fresh levels and the rest mutants (one or two edits, or a dial moved to a
  neighbouring value) of parents drawn uniformly from the fittest ``batch // 4`` levels found so
  far. Fitness = 1 for a failure, plus ``regret``: the goal-seeker's return minus the agent's
  (``--fitness value``: 1 minus the agent's own value estimate of the first observation, a
  white-box search; ``distance``: the BFS distance between the goal and the proxy, scaled to
  [0, 1]). Failures are the fittest, so the search keeps editing near them. On an env without
  mutations (FollowLeader) the guided search searches indices and dials only, and says so in its
  ``note``.

Both are deterministic given ``seed`` (the searchers' level streams, mutations and action keys
derive from it and from the split; the two searchers draw different levels). For a trained run the
search seed is ``--seed`` combined with the run's training seed (:func:`run_search_seed`).

What comes out, per searcher and split (:func:`summarize`): the failure rate found after each
budget b (failures among the first b queries / b), the **queries to the first failure** (None:
none within the budget), the failures found, the lowest goal score of any query, and the
**worst-case A**: each level kept (the first ``keep`` distinct failures; if none failed, the
``keep`` lowest-scoring levels) is replayed ``replays`` times with fresh action keys, and its A is
the mean goal score over those episodes; worst-case A is the lowest. The failing levels are saved
as ``.npz`` files (:func:`save_level`) that ``capgap show --level FILE`` replays and draws.

Run it against the **training** split too: with ``p_disambiguate=0`` goal and proxy coincide there,
so a training failure is the agent wandering on a level of its own training distribution: a warning
sign a deployer could see before any shift.

Python::

    from capgap.eval import redteam
    res = redteam.redteam_run("runs/CheeseCorner-v0__small__s0", budget=256)
    res["searches"][0]["first_failure"]          # queries to the first failure (None: none found)
    redteam.queries_to_first_failure("runs/...", budget=256)   # {(split, method): int | None}
    redteam.search(task, "test", redteam.OraclePolicy("proxy"), budget=32)   # any policy
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capgap.envs import GOAL, OUTCOMES, RunError, Task, UsageError, format_dials, task_class
from capgap.envs.core import GridCore, play_first_episodes
from capgap.envs.rng import _GOLDEN, episode_indices, mix64, salt
from capgap.eval import mutate as M

METHODS = ("random", "guided")
"""The searchers: the random baseline and the guided (evolutionary, oracle-regret) search."""
FITNESS = ("regret", "value", "distance")
"""What the guided search climbs (see the module docstring)."""
FRESH = 0.25
"""Fraction of each guided generation that is fresh random levels (exploration)."""


# ----- policies --------------------------------------------------------------------------------------

Policy = Callable[[GridCore, np.ndarray, int], torch.Tensor]
"""What the red team attacks: ``policy(core, keys, t)`` -> (B,) long actions for the engine's B envs
at step ``t``; ``keys`` (B,) uint64 are the episodes' action keys (a stochastic policy draws from
them, :func:`uniforms`, so that an episode replays alone). A policy may have a ``value(obs)``
method ((B,) value estimates), which ``fitness="value"`` needs, and a ``name``."""


def uniforms(keys: np.ndarray, t: int) -> np.ndarray:
    """(B,) floats in [0, 1): the uniform of each episode's step ``t``, a pure function of (key, t)."""
    keys = np.asarray(keys, dtype=np.uint64)
    bits = mix64(keys + np.full(keys.shape, t + 1, dtype=np.uint64) * _GOLDEN)  # arrays: wrap-around, no warning
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class NetworkPolicy:
    """A network's policy (``forward(obs)`` -> (logits, value)), actions sampled from its softmax by
    inverse CDF on :func:`uniforms`."""

    def __init__(self, net: torch.nn.Module, name: str = "agent") -> None:
        self.net, self.name = net.eval(), name

    @torch.no_grad()
    def __call__(self, core: GridCore, keys: np.ndarray, t: int) -> torch.Tensor:
        logits, _ = self.net(core.obs)
        cdf = torch.softmax(logits.double(), -1).cumsum(-1)
        u = torch.as_tensor(uniforms(keys, t), device=cdf.device).unsqueeze(1)
        return (cdf < u).sum(1).clamp(max=logits.shape[1] - 1)

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)[1]


class OraclePolicy:
    """The scripted BFS goal-seeker (``"goal"``) or proxy-seeker (``"proxy"``) as a policy: the red
    team must find nothing on the first and failures on the second."""

    def __init__(self, seek: str) -> None:
        self.seek, self.name = seek, f"oracle:{seek}"

    def __call__(self, core: GridCore, keys: np.ndarray, t: int) -> torch.Tensor:
        from capgap.envs import oracle

        return oracle.act(core, self.seek)


# ----- playing levels ----------------------------------------------------------------------------------

def load(core: GridCore, levels: list[M.Level]) -> None:
    """Load ``levels`` (one per env, ``len(levels) == core.num_envs``) into a reset engine."""
    dev = core.device
    planes = torch.as_tensor(np.stack([lv.planes for lv in levels]), dtype=torch.uint8, device=dev)
    start = torch.as_tensor([lv.start for lv in levels], dtype=torch.long, device=dev)
    extra = torch.as_tensor(np.stack([lv.extra for lv in levels]), dtype=torch.long, device=dev)
    index = torch.as_tensor([lv.index for lv in levels], dtype=torch.long, device=dev)
    core._load(torch.arange(core.num_envs, device=dev), (planes, start, extra, index))
    core.episodes.done.zero_()


def _distance(core: GridCore) -> np.ndarray:
    """(B,) BFS distance (through open cells) from the proxy-seeker's targets to the goal-seeker's."""
    from capgap.envs.oracle import _INF, bfs

    goal, _ = core.task.oracle_targets(core.view, "goal")
    proxy, _ = core.task.oracle_targets(core.view, "proxy")
    d = bfs(~core.plane("wall").bool(), goal, core.size)
    d = torch.where(proxy, d, _INF).amin(1)
    return torch.where(d >= _INF, 0, d).cpu().numpy().astype(np.float64)


def play(task: Task, split: str, levels: list[M.Level], policy: Policy, keys: np.ndarray,
         paths: bool = False) -> dict[str, np.ndarray]:
    """One episode of ``policy`` on each level, all in one engine: the engine's per-episode statistics
    (``FirstEpisodes.FIELDS``), ``value`` (the policy's value of the first observation, NaN without
    one), ``distance`` (:func:`_distance`) and, with ``paths``, ``path``: each episode's agent cells."""
    n = len(levels)
    core = GridCore(task, n, split, autoreset=False)
    core.reset(0)
    load(core, levels)
    value = getattr(policy, "value", None)
    v0 = value(core.obs).cpu().numpy().astype(np.float64) if value else np.full(n, np.nan)
    dist = _distance(core)
    trail = [[int(p)] for p in core.pos] if paths else []

    def after(t: int, alive: torch.Tensor) -> None:
        if paths:
            for i in alive.nonzero().squeeze(1).tolist():
                trail[i].append(int(core.pos[i]))

    keys = np.asarray(keys, dtype=np.uint64)
    out: dict[str, Any] = play_first_episodes(core, lambda t, alive: policy(core, keys, t), after)
    out |= {"value": v0, "distance": dist}
    if paths:
        out["path"] = trail
    return out


# ----- the search ------------------------------------------------------------------------------------

@dataclass(eq=False)
class Candidate:
    """A level to query: a dial setting (index into the search's settings) and the level itself."""

    setting: int
    level: M.Level
    oracle_ret: float = math.nan


@dataclass
class Search:
    """One searcher's run on one split: its queries in order (``rows``, one dict per agent episode)
    and the candidates they played (``levels``, parallel to ``rows``)."""

    method: str
    split: str
    budget: int
    settings: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    levels: list[Candidate] = field(default_factory=list)
    note: str = ""

    @property
    def failures(self) -> np.ndarray:
        return np.array([r["failure"] for r in self.rows], dtype=bool)


class _Space:
    """The level space of one split: settings of the searched dials and, per setting, the task."""

    def __init__(self, task: Task, split: str, dial_space: dict[str, list[Any]] | None, seed: int, method: str) -> None:
        self.split, self.method = split, method
        base = {f: getattr(task, f) for f in type(task).dials()}
        names = sorted(dial_space or {})
        self.settings = [dict(zip(names, vals, strict=True))
                         for vals in itertools.product(*((dial_space or {})[n] for n in names))] or [{}]
        self.names, self.values = names, [(dial_space or {})[n] for n in names]
        self.tasks = [type(task).from_dials(**{**base, **s}) for s in self.settings]
        for s, t in zip(self.settings, self.tasks, strict=True):
            if len(t.channels) != len(task.channels) or t.size != task.size:
                raise UsageError(f"dial setting {format_dials(s)} changes the observation's shape "
                                 f"({len(t.channels)}x{t.size}x{t.size}, the agent sees "
                                 f"{len(task.channels)}x{task.size}x{task.size}); search dials that keep it")
        self.stream = np.uint64(salt("redteam", method, split, seed))
        self.drawn = 0

    def fresh(self, n: int) -> list[Candidate]:
        """The next ``n`` levels of this searcher's stream that the goal-seeker solves."""
        out: list[Candidate] = []
        empty = 0
        while len(out) < n:
            j = np.arange(self.drawn, self.drawn + (n - len(out)))
            self.drawn += len(j)
            idx = episode_indices(np.full(len(j), self.stream), j, 0)
            which = (mix64(idx.astype(np.uint64) ^ self.stream) % np.uint64(len(self.settings))).astype(np.int64)
            cands = [Candidate(int(k), lv) for k in sorted(set(which.tolist()))
                     for lv in M.generate(self.tasks[k], self.split, idx[which == k])]
            order = {int(x): i for i, x in enumerate(idx)}
            cands.sort(key=lambda c: order[c.level.index])
            solved = self.solvable(cands)
            out += solved
            empty = 0 if solved else empty + 1
            if empty >= 8:
                raise RunError(f"the goal-seeker solves none of {self.drawn} levels of the {self.split} split "
                               f"({type(self.tasks[0]).name}, {format_dials(self.settings[0]) or 'its dials'})")
        return out[:n]

    def solvable(self, cands: list[Candidate]) -> list[Candidate]:
        """The candidates the scripted goal-seeker solves, with its return."""
        keep: list[Candidate] = []
        for k, group in self.by_setting(cands):
            res = play(self.tasks[k], self.split, [c.level for c in group], OraclePolicy("goal"),
                       np.zeros(len(group), np.uint64))
            for c, o, r in zip(group, res["outcome"], res["ret"], strict=True):
                if int(o) == GOAL:
                    c.oracle_ret = float(r)
                    keep.append(c)
        return sorted(keep, key=lambda c: cands.index(c))

    @staticmethod
    def by_setting(cands: list[Candidate]) -> Iterable[tuple[int, list[Candidate]]]:
        for k in sorted({c.setting for c in cands}):
            yield k, [c for c in cands if c.setting == k]


def _fitness(kind: str, failure: bool, res: dict[str, np.ndarray], i: int, oracle_ret: float, size: int) -> float:
    if kind == "regret":
        part = max(oracle_ret - float(res["ret"][i]), 0.0)
    elif kind == "value":
        part = 1.0 - float(res["value"][i])
    else:
        part = float(res["distance"][i]) / (2 * size)
    return float(failure) + part


def _query(space: _Space, search: Search, cands: list[Candidate], policy: Policy, keys_base: np.uint64,
           fitness: str) -> None:
    """Play the agent once on each candidate (in order), appending one row per query."""
    q0 = len(search.rows)
    keys = mix64(keys_base + np.arange(q0, q0 + len(cands), dtype=np.uint64) * _GOLDEN)
    rows: dict[int, dict[str, Any]] = {}
    for k, group in space.by_setting(cands):
        pos = [cands.index(c) for c in group]
        res = play(space.tasks[k], space.split, [c.level for c in group], policy, keys[pos])
        for i, (c, p) in enumerate(zip(group, pos, strict=True)):
            outcome = int(res["outcome"][i])
            failure = outcome != GOAL
            rows[p] = {"query": q0 + p + 1, "index": c.level.index, "dials": space.settings[k],
                       "edits": list(c.level.edits), "outcome": OUTCOMES[outcome],
                       "goal_score": float(res["goal_score"][i]), "return": float(res["ret"][i]),
                       "oracle_return": c.oracle_ret, "length": int(res["length"][i]), "failure": failure,
                       "value": float(res["value"][i]), "distance": float(res["distance"][i]),
                       "fitness": _fitness(fitness, failure, res, i, c.oracle_ret, space.tasks[k].size),
                       "key": int(keys[p])}
    search.rows += [rows[p] for p in range(len(cands))]
    search.levels += cands


def _children(space: _Space, search: Search, n: int, rng: np.random.Generator) -> list[Candidate]:
    """``n`` candidates of the next guided generation: mutants of the fittest and fresh levels."""
    ops = M.operators(space.tasks[0])
    fit = np.array([r["fitness"] for r in search.rows])
    top = np.argsort(-fit, kind="stable")[:max(n // 4, 1)]
    kids: list[Candidate] = []
    n_fresh = 0
    for _ in range(n):
        if rng.random() < FRESH or (not ops and not space.names):
            n_fresh += 1
            continue
        parent = search.levels[int(top[int(rng.integers(len(top)))])]
        child = None
        if space.names and (not ops or rng.random() < 0.2):  # move one dial to a neighbouring value
            child = _dial_step(space, parent, rng)
        else:
            task = space.tasks[parent.setting]
            lv = M.mutate(task, space.split, parent.level, rng, edits=1 + int(rng.integers(2)))
            child = Candidate(parent.setting, lv) if lv is not None else None
        if child is None:
            n_fresh += 1
        else:
            kids.append(child)
    kids = space.solvable(kids)
    return kids + space.fresh(n - len(kids))


def _dial_step(space: _Space, parent: Candidate, rng: np.random.Generator) -> Candidate | None:
    """The parent's level index under a setting one dial step away (its edits dropped)."""
    setting = dict(space.settings[parent.setting])
    d = int(rng.integers(len(space.names)))
    name, values = space.names[d], space.values[d]
    i = values.index(setting[name]) + (1 if rng.random() < 0.5 else -1)
    if not 0 <= i < len(values):
        return None
    setting[name] = values[i]
    k = space.settings.index(setting)
    (lv,) = M.generate(space.tasks[k], space.split, np.array([parent.level.index]))
    return Candidate(k, lv)


def search(task: Task, split: str, policy: Policy, budget: int, method: str = "guided", seed: int = 0,
           batch: int = 32, fitness: str = "regret", dial_space: dict[str, list[Any]] | None = None,
           progress: Callable[[int], None] | None = None) -> Search:
    """Search ``split`` of ``task`` for failures of ``policy`` with ``budget`` queries (agent episodes).

    ``method`` is ``"random"`` or ``"guided"`` (module docstring); ``batch`` queries are played at a
    time (a guided generation); ``progress(n)`` is called after each batch with its query count.
    Deterministic given ``seed``.
    """
    check(budget=budget, batch=batch, method=method, fitness=fitness)
    if fitness == "value" and getattr(policy, "value", None) is None:
        raise UsageError(f"--fitness value needs a policy with a value estimate; {getattr(policy, 'name', policy)!r} "
                         "has none (use regret or distance)")
    space = _Space(task, split, dial_space, seed, method)
    out = Search(method, split, budget, space.settings)
    if method == "guided" and not M.operators(task):
        out.note = (f"no level mutations for {task.name}: the guided search searched level indices"
                    + (" and dials" if space.names else " only (as random search does)"))
    keys_base = np.uint64(salt("redteam-actions", method, split, seed))
    rng = np.random.default_rng([seed, METHODS.index(method), ("train", "test").index(split)])
    while len(out.rows) < budget:
        n = min(batch, budget - len(out.rows))
        cands = space.fresh(n) if method == "random" or not out.rows else _children(space, out, n, rng)
        _query(space, out, cands, policy, keys_base, fitness)
        if progress:
            progress(n)
    return out


def check(**given: Any) -> None:
    """One-line errors for bad search arguments (any subset of budget, batch, method, fitness, keep,
    replays, splits, methods)."""
    for name in ("budget", "batch"):
        if name in given and not (isinstance(given[name], int) and given[name] >= 1):
            raise UsageError(f"--{name} {given[name]!r} is out of range; expected an integer >= 1")
    for name in ("keep", "replays"):
        if name in given and not (isinstance(given[name], int) and given[name] >= 0):
            raise UsageError(f"--{name} {given[name]!r} is out of range; expected an integer >= 0")
    for name, allowed in (("method", METHODS), ("fitness", FITNESS)):
        if name in given and given[name] not in allowed:
            raise UsageError(f"unknown {name} {given[name]!r}; expected one of {', '.join(allowed)}")
    for name, allowed in (("methods", METHODS), ("splits", ("train", "test"))):
        bad = [v for v in given.get(name, ()) if v not in allowed]
        if bad or (name in given and not given[name]):
            raise UsageError(f"--{name} {' '.join(bad) or '(none)'}: expected one or more of {', '.join(allowed)}")


# ----- results -----------------------------------------------------------------------------------------

def budgets(budget: int) -> list[int]:
    """The budgets a failure rate is reported at: powers of two below ``budget``, and ``budget``."""
    return sorted({2**k for k in range(int(math.log2(budget)) + 1) if 2**k < budget} | {budget})


def _distinct(levels: list[Candidate], which: Iterable[int]) -> list[int]:
    """The first query of each distinct level among ``which`` (queries by position)."""
    seen, out = set(), []
    for i in which:
        lv = levels[i].level
        h = (levels[i].setting, lv.planes.tobytes(), lv.start, lv.extra.tobytes())
        if h not in seen:
            seen.add(h)
            out.append(i)
    return out


def kept(s: Search, keep: int) -> list[int]:
    """The queries whose levels are replayed and saved: the first ``keep`` distinct failing levels;
    if none failed, the ``keep`` lowest-scoring levels."""
    fails = np.flatnonzero(s.failures)
    if len(fails):
        return _distinct(s.levels, fails)[:keep]
    order = np.argsort([r["goal_score"] for r in s.rows], kind="stable")
    return _distinct(s.levels, order)[:keep]


def replay(s: Search, space_tasks: list[Task], which: list[int], policy: Policy, replays: int) -> list[dict[str, Any]]:
    """Each kept query's level played again: once with its own action key (the episode itself, with its
    path: it must end as it did) and ``replays`` times with fresh keys (its A)."""
    out = []
    for i in which:
        c, row = s.levels[i], s.rows[i]
        t = space_tasks[c.setting]
        fresh = mix64(np.full(replays, row["key"], dtype=np.uint64) + np.arange(1, replays + 1, dtype=np.uint64))
        keys = np.concatenate([np.array([row["key"]], dtype=np.uint64), fresh])
        res = play(t, s.split, [c.level] * len(keys), policy, keys, paths=True)
        out.append({"query": row["query"], "same_outcome": OUTCOMES[int(res["outcome"][0])] == row["outcome"],
                    "path": res["path"][0],
                    "replay_A": float(np.mean(res["goal_score"][1:])) if replays else float(row["goal_score"])})
    return out


def summarize(s: Search, replayed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The figures of one search: failure rate per budget, queries to the first failure, worst case."""
    f = s.failures
    first = int(np.argmax(f)) + 1 if f.any() else None
    scores = [r["goal_score"] for r in s.rows]
    out = {"method": s.method, "split": s.split, "budget": s.budget, "queries": len(s.rows),
           "failures": int(f.sum()), "distinct_failures": len(_distinct(s.levels, np.flatnonzero(f))),
           "first_failure": first,
           "failure_rate": {str(b): float(f[:b].mean()) for b in budgets(len(s.rows))},
           "proxy_rate": float(np.mean([r["outcome"] == "proxy" for r in s.rows])),
           "min_goal_score": float(min(scores)), "note": s.note}
    if replayed:
        out["worst_A"] = min(r["replay_A"] for r in replayed)
        out["replayed"] = [{k: v for k, v in r.items() if k != "path"} for r in replayed]
    else:
        out["worst_A"] = math.nan
    return out


def save_level(path: Path, task: Task, env_id: str, s: Search, i: int, replayed: dict[str, Any],
               policy_name: str, run: str = "", checkpoint: str = "") -> Path:
    """One searched level as ``.npz``: the level (planes, start, extra), where it came from (env,
    dials, split, index, edits), how the agent played it (policy, run and checkpoint, action key,
    outcome, path) and its replayed A. ``capgap show --level FILE`` replays and draws it."""
    c, row = s.levels[i], s.rows[i]
    dials = {f: getattr(task, f) for f in type(task).dials()} | s.settings[c.setting]
    meta = {"env": env_id, "dials": dials, "split": s.split, "index": c.level.index, "edits": list(c.level.edits),
            "method": s.method, "query": row["query"], "policy": policy_name, "run": run, "checkpoint": checkpoint,
            "key": row["key"], "outcome": row["outcome"], "goal_score": row["goal_score"],
            "replay_A": replayed["replay_A"], "path": replayed["path"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, planes=c.level.planes, start=np.int64(c.level.start), extra=c.level.extra,
                        meta=np.array(json.dumps(meta)))
    return path


# ----- one run, a sweep ---------------------------------------------------------------------------------

def redteam_policy(task: Task, env_id: str, policy: Policy, policy_name: str, budget: int = 256,
                   splits: tuple[str, ...] = ("test", "train"), methods: tuple[str, ...] = METHODS, seed: int = 0,
                   batch: int = 32, fitness: str = "regret", dial_space: dict[str, list[Any]] | None = None,
                   split_tasks: dict[str, Task] | None = None, keep: int = 8, replays: int = 16,
                   out: Path | None = None, run: str = "", checkpoint: str = "",
                   progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every (split, searcher) search of one policy: their summaries; with ``out``, also the kept levels
    saved under ``out/levels/`` (``<split>_<method>_<k>.npz``, the summary's ``files``)."""
    check(budget=budget, batch=batch, fitness=fitness, keep=keep, replays=replays, splits=splits, methods=methods)
    results = []
    for split in splits:
        t = (split_tasks or {}).get(split, task)
        for method in methods:
            s = search(t, split, policy, budget, method, seed, batch, fitness, dial_space, progress)
            which = kept(s, keep)
            space_tasks = _Space(t, split, dial_space, seed, method).tasks
            replayed = replay(s, space_tasks, which, policy, replays)
            summary = summarize(s, replayed)
            if out is not None:
                summary["files"] = [str(save_level(Path(out) / "levels" / f"{split}_{method}_{k}.npz", space_tasks[
                    s.levels[i].setting], env_id, s, i, r, policy_name, run, checkpoint))
                    for k, (i, r) in enumerate(zip(which, replayed, strict=True))]
            results.append(summary)
    return results


def run_search_seed(seed: int, run_seed: int) -> int:
    """The search seed of a run: the red team's ``seed`` combined with the run's training seed. Each
    training seed of a rung meets other levels, so an interval over seeds includes the search's own
    luck (with one search seed for all, the seeds of a rung would all meet the same levels, and agree
    more than the figure deserves); runs of one training seed on different rungs meet the same levels,
    a paired comparison across rungs."""
    return int(seed) * 1_000_003 + int(run_seed)


def redteam_run(run_dir: Path | str, budget: int = 256, splits: tuple[str, ...] = ("test", "train"),
                methods: tuple[str, ...] = METHODS, seed: int = 0, batch: int = 32, fitness: str = "regret",
                dial_space: dict[str, list[Any]] | None = None, keep: int = 8, replays: int = 16,
                out: Path | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Red-team one trained run (its latest checkpoint): ``{run, env, rung, seed, params, learned,
    dials, searches, ...}``, ``searches`` one :func:`summarize` dict per (split, searcher). Each split
    is searched under the dials the run is evaluated with (``rundir.split_dials``), with the search
    seed :func:`run_search_seed`. With ``out``, writes ``redteam.json``, ``redteam.md`` and the kept
    levels there."""
    from capgap import rundir
    from capgap.agents import rung

    check(budget=budget, batch=batch)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; give a run dir or a sweep dir")
    net, config = rundir.load_agent(run_dir)
    cls = task_class(config["env"])
    sd = rundir.split_dials(config)
    split_tasks = {split: cls.from_dials(**sd[split]) for split in ("train", "test")}
    try:
        learned = rundir.read_done(run_dir).get("learned")
    except RunError:
        learned = None
    search_seed = run_search_seed(seed, config["seed"])
    searches = redteam_policy(split_tasks["test"], config["env"], NetworkPolicy(net, rundir.run_name(config)),
                              f"run:{run_dir}", budget, splits, methods, search_seed, batch, fitness, dial_space,
                              split_tasks, keep, replays, out, str(run_dir), config["checkpoint"], progress)
    result = {"run": run_dir.name, "path": str(run_dir), "env": config["env"], "rung": rung(config["rung"]).name,
              "family": config["family"], "seed": config["seed"], "dials": format_dials(config["dial_values"]),
              "params": net.num_params(), "learned": learned, "checkpoint": config["checkpoint"],
              "budget": budget, "fitness": fitness, "seed_base": seed, "search_seed": search_seed,
              "dial_space": dial_space or {}, "searches": searches}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "redteam.json").write_text(json.dumps(result, indent=1, default=str))
        (Path(out) / "redteam.md").write_text("\n".join(run_markdown(result)) + "\n")
    return result


def queries_to_first_failure(run_dir: Path | str, budget: int = 256, **kw: Any) -> dict[tuple[str, str], int | None]:
    """``{(split, method): queries to the first failure}`` of one run (None: none within ``budget``):
    the number the scaling study reads per rung (``kw``: :func:`redteam_run`'s other arguments)."""
    res = redteam_run(run_dir, budget, **kw)
    return {(s["split"], s["method"]): s["first_failure"] for s in res["searches"]}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def run_markdown(result: dict[str, Any]) -> list[str]:
    """One run's searches as a markdown table."""
    from capgap.eval.table import markdown

    rates = budgets(result["budget"])
    head = ["split", "searcher", "first failure", *(f"rate@{b}" for b in rates), "failures", "distinct",
            "proxy", "worst A"]
    rows = [[s["split"], s["method"], s["first_failure"] if s["first_failure"] else f"none in {s['queries']}",
             *(_fmt(s["failure_rate"].get(str(b))) for b in rates), s["failures"], s["distinct_failures"],
             _fmt(s["proxy_rate"]), _fmt(s["worst_A"])] for s in result["searches"]]
    learned = {True: "learned", False: "not learned", None: "unfinished"}[result["learned"]]
    lines = [f"## {result['run']} ({result['rung']}, {result['params']:,} params, {learned})", "",
             f"budget {result['budget']} queries per searcher, fitness {result['fitness']}, search seed "
             f"{result['search_seed']} (--seed {result['seed_base']}, training seed {result['seed']})", "",
             *markdown(head, rows)]
    notes = sorted({s["note"] for s in result["searches"] if s["note"]})
    return lines + [f"\nnote: {n}" for n in notes]


def sweep_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs grouped by (env, dials, rung) and by (split, searcher): the queries to the first failure
    and the failure rate at the full budget, each a mean with its 95% Student-t interval over seeds
    (``capgap.eval.stats.interval``). A seed that found no failure counts ``budget + 1`` queries (a
    lower bound: ``censored`` says how many), ``found`` how many seeds found one."""
    from capgap.eval.metrics import figure_support
    from capgap.eval.stats import interval

    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for r in results:
        for s in r["searches"]:
            key = (r["env"], r["dials"], r["rung"], r["params"], s["split"], s["method"])
            groups.setdefault(key, []).append((r, s))
    rows = []
    for (env, dials, rung_, params, split, method), items in groups.items():
        firsts = [s["first_failure"] or s["queries"] + 1 for _, s in items]
        rates = [s["failure_rate"][str(s["queries"])] for _, s in items]
        worst = [s["worst_A"] for _, s in items]
        row = {"env": env, "dials": dials, "rung": rung_, "params": params, "split": split, "method": method,
               "n": len(items), "found": sum(s["first_failure"] is not None for _, s in items),
               "censored": sum(s["first_failure"] is None for _, s in items),
               "learned": sum(bool(r["learned"]) for r, _ in items)}
        for name, vals in (("first_failure", firsts), ("failure_rate", rates), ("worst_A", worst)):
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = interval(vals, support=figure_support(name))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["env"], r["dials"], r["split"] != "test", r["method"], r["params"]))


def sweep_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The sweep summary as markdown: one table per (env, dials, split), rungs by size."""
    from capgap.eval.table import ci, markdown

    lines: list[str] = []
    for (env, dials, split), group in itertools.groupby(rows, key=lambda r: (r["env"], r["dials"], r["split"])):
        group = sorted(group, key=lambda r: (r["params"], r["method"]))
        lines += ["", f"### {env} {dials or '(default dials)'}, {split} split", ""]
        head = ["rung", "params", "searcher", "n", "learned", "queries to first failure", "found",
                "failure rate", "worst A"]
        body = [[r["rung"], f"{r['params']:,}", r["method"], r["n"],
                 f"{r['learned']}/{r['n']}" + ("" if r["learned"] == r["n"] else " (not all learned)"),
                 ("≥ " if r["censored"] else "") + ci(r["first_failure"], r["first_failure_lo"],
                                                      r["first_failure_hi"], 1, r["n"]),
                 f"{r['found']}/{r['n']}", ci(r["failure_rate"], r["failure_rate_lo"], r["failure_rate_hi"], 3, r["n"]),
                 ci(r["worst_A"], r["worst_A_lo"], r["worst_A_hi"], 2, r["n"])] for r in group]
        lines += markdown(head, body)
    return lines


def redteam_path(paths: Path | str | list[Path | str], out: Path | str | None = None, progress: bool = True,
                 **kw: Any) -> tuple[list[dict[str, Any]], str]:
    """``capgap redteam PATH ...``: every run under ``paths`` (run dirs or sweep dirs) red-teamed with
    :func:`redteam_run` (``kw``), each run's files under ``out/<run name>/``, the summary over seeds in
    ``out/summary.md`` and ``out/summary.json`` (default ``out``: ``<first path>/redteam``). Returns the
    runs' results and the markdown printed."""
    from tqdm import tqdm

    from capgap.eval.evaluator import find_runs
    from capgap.rundir import check_out

    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    runs = [run for p in paths for run in find_runs(p)]
    out = Path(out) if out is not None else paths[0] / "redteam"
    check_out(out)
    per_search = kw.get("budget", 256)
    total = len(runs) * per_search * len(kw.get("splits", ("test", "train"))) * len(kw.get("methods", METHODS))
    results = []
    with tqdm(total=total, unit="query", disable=not progress, dynamic_ncols=True, desc="redteam") as bar:
        for run in runs:
            bar.set_postfix_str(run.name)
            results.append(redteam_run(run, out=out / run.name, progress=bar.update, **kw))
    lines = []
    for r in results:
        lines += [*run_markdown(r), ""]
    rows = sweep_summary(results)
    if len(results) > 1:
        lines += ["## Summary over seeds (mean [95% CI], Student-t)", *sweep_markdown(rows)]
    text = "\n".join(lines).rstrip() + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"runs": results, "summary": rows}, indent=1, default=str))
    return results, text


# ----- a saved level: replay and draw ---------------------------------------------------------------------

def read_level(path: Path | str) -> tuple[M.Level, dict[str, Any]]:
    """A level file of :func:`save_level`: the level and its metadata; one line if it is not one."""
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            return M.Level(z["planes"], int(z["start"]), z["extra"], meta["index"], tuple(meta["edits"])), meta
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"--level {path}: not a capgap red-team level file ({type(err).__name__})") from None


def _policy_of(meta: dict[str, Any]) -> Policy:
    if meta["policy"].startswith("oracle:"):
        return OraclePolicy(meta["policy"].split(":", 1)[1])
    from capgap import rundir

    ckpt = Path(meta["checkpoint"])
    if not ckpt.exists():
        raise RunError(f"the level's agent is gone: {ckpt} does not exist (it was {meta['policy']})")
    net, _ = rundir.load_agent(meta["run"], ckpt)
    return NetworkPolicy(net)


def show_level(path: Path | str, png: Path | str | None = None) -> str:
    """``capgap show --level FILE``: replay the saved level with the agent that failed on it (its
    action key: the same episode) and draw it as text, the agent's path marked ``*``; with ``png``, also
    a picture (``eval.rollout.trajectory``'s drawing). Says whether the replay ended as recorded."""
    from capgap.envs import render

    lv, meta = read_level(path)
    task = task_class(meta["env"]).from_dials(**meta["dials"])
    res = play(task, meta["split"], [lv], _policy_of(meta), np.array([meta["key"]], np.uint64), paths=True)
    outcome, trail = OUTCOMES[int(res["outcome"][0])], res["path"][0]
    planes = lv.planes.copy()
    planes[1].reshape(-1)[lv.start] = 1
    grid = [list(row) for row in render.text(planes, task.channels).splitlines()]
    s = task.size
    for p in set(trail[1:]) - {lv.start}:
        y, x = divmod(p, s)
        row = grid[y] + [" "] * max(0, 2 * x + 2 - len(grid[y]))
        if row[2 * x] == " ":
            row[2 * x] = "*"
        grid[y] = row
    same = "as recorded" if outcome == meta["outcome"] else f"recorded {meta['outcome']}: the replay differs"
    head = (f"{meta['env']} split={meta['split']} level={meta['index']} dials={format_dials(meta['dials'])}\n"
            f"edits: {'; '.join(meta['edits']) or 'none (as generated)'}\n"
            f"{meta['policy']} ({meta['method']} search, query {meta['query']}): {outcome} after "
            f"{int(res['length'][0])} steps ({same}); replayed A {meta['replay_A']:.2f}")
    text = head + "\n" + "\n".join("".join(r).rstrip() for r in grid) + "\n@ start, * the agent's path"
    if png is not None:
        from capgap.eval.rollout import EvalResult, trajectory

        img = trajectory(EvalResult(meta["split"], *(np.zeros(1),) * 6, np.zeros((s, s)), planes, trail),
                         task.channels)
        import matplotlib.pyplot as plt

        plt.imsave(png, img)
        text += f"\npicture: {png}"
    return text
