# ruff: noqa: E501
"""Scratch (feasibility study): a 'fused' engine step for a FIXED level set (num_levels > 0).

One compiled graph does everything B-sized: move, rules, time limit, done, episode statistics
(torch.where on done instead of index writes), the next level's index (splitmix64 in int64
torch, bit-equal to envs.rng.episode_indices) and the reset of the small per-env state.
Only the obs writes stay eager (inductor copies the whole obs buffer when a graph both reads and
writes it): 2 index_fill_ for the agent plane, and for the finished envs nonzero + 4 ops.

    OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1 NOVEC=1 .venv/bin/python fused_step.py equal|bench B NL
"""

import os
import statistics
import sys
import time

import numpy as np
import torch
import torch._inductor.config as _cfg

import capgap.envs as E
from capgap.envs import rng as R
from capgap.envs.core import GridCore
from capgap.envs.task import GOAL, NEITHER, PROXY, read_flat

torch.set_num_threads(1)
if os.environ.get("NOVEC"):
    _cfg.cpp.simdlen = 1

INPLACE = bool(os.environ.get("INPLACE"))
ENV, DIALS = "capgap/CheeseCorner-v0", dict(size=13, max_steps=128)


def _i64(u):
    return int(np.uint64(u).astype(np.int64))


M1, M2, GOLD = _i64(R._M1), _i64(R._M2), _i64(R._GOLDEN)
EP_SALT = _i64(R.salt("episode"))


def _srl(z, k):  # logical right shift of int64 seen as uint64
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix64_t(z):
    z = (z ^ _srl(z, 30)) * M1
    z = (z ^ _srl(z, 27)) * M2
    return z ^ _srl(z, 31)


def episode_indices_t(seeds, episodes, n):
    h = _srl(mix64_t(mix64_t(seeds ^ EP_SALT) + episodes * GOLD), 64 - R.INDEX_BITS)
    return h % n


class FusedCore(GridCore):
    def setup(self, compile=True):
        assert self.num_levels > 0
        self.planes_bank, self.start_bank, self.extra_bank, _ = self.source.bank
        self.seeds_t = torch.from_numpy(self.source.seeds.view(np.int64).copy())
        self.ep_t = torch.from_numpy(self.source.episode.copy())
        self.extra_c = self.extra.contiguous()  # (B, E)
        for f in ("ret", "length", "outcome", "goal_score", "capability_score", "level", "done"):
            setattr(self.episodes, f, getattr(self.episodes, f).clone())
        f = self._graph
        opts = {"cpp_wrapper": True} if os.environ.get("CPPWRAP") else None
        self._g = torch.compile(f, dynamic=False, fullgraph=True, options=opts) if compile else f
        return self

    def _graph(self, actions):
        old = self.pos.clone() if INPLACE else self.pos
        new = old + self.move.index_select(0, actions.long())
        pos = torch.where(read_flat(self.flat, self.base + new).bool(), old, new)
        self.view.pos = pos
        t = self.t + 1
        here = read_flat(self.flat, self.view.under()).t()
        here = torch.cat([here[:, :1], torch.ones_like(here[:, 1:2]), here[:, 2:]], 1)
        self.view.extra = self.extra_c
        ev = self.task.step(self.view, here)
        reward = ev.reward * (1.0 - self._decay * t)
        ret = self.ret + reward
        goal_ = self.goal + ev.goal_gain * ~self.proxy
        proxy = self.proxy | ev.proxy
        terminated = ev.terminated
        truncated = (t >= self.task.max_steps) & ~terminated
        done = terminated | truncated
        # episode statistics where done (what _record writes)
        e = self.episodes
        g = goal_.clamp(0.0, 1.0)
        reached = g >= 1.0 - 1e-5
        e_ret = torch.where(done, ret, e.ret)
        e_len = torch.where(done, t, e.length)
        e_out = torch.where(
            done, torch.where(reached, GOAL, torch.where(proxy, PROXY, NEITHER)).to(torch.int8), e.outcome
        )
        e_gs = torch.where(done, torch.where(reached, 1.0, g), e.goal_score)
        e_cs = torch.where(done, torch.where(reached | proxy, 1.0, g), e.capability_score)
        e_lv = torch.where(done, self.level, e.level)
        # reset of the small state (what LevelSource.next + _load write), elementwise
        lvl = episode_indices_t(self.seeds_t, self.ep_t, self.num_levels)
        start = self.start_bank.index_select(0, lvl)
        extra = torch.where(done[:, None], self.extra_bank.index_select(0, lvl), self.extra_c)
        d = done
        if INPLACE:  # state updated in place: inductor writes into the input buffers, no per-step allocations
            npos = torch.where(d, start, pos)
            self.pos.copy_(npos)
            self.t.copy_(torch.where(d, 0, t))
            self.ret.copy_(torch.where(d, 0.0, ret))
            self.goal.copy_(torch.where(d, 0.0, goal_))
            self.proxy.copy_(proxy & ~d)
            self.extra_c.copy_(extra)
            self.level.clone()
            self.level.copy_(torch.where(d, lvl, self.level))
            self.ep_t.add_(d.long())
            e.ret.copy_(e_ret)
            e.length.copy_(e_len)
            e.outcome.copy_(e_out)
            e.goal_score.copy_(e_gs)
            e.capability_score.copy_(e_cs)
            e.level.copy_(e_lv)
            e.done.copy_(done)
            return (
                reward,
                terminated,
                truncated,
                done,
                old,
                pos,
                npos,
            )  # (old: a clone, an output aliasing a mutated input reads its new value)
        return (
            reward,
            terminated,
            truncated,
            done,
            old,
            pos,
            torch.where(d, start, pos),
            torch.where(d, 0, t),
            torch.where(d, 0.0, ret),
            torch.where(d, 0.0, goal_),
            proxy & ~d,
            extra,
            torch.where(d, lvl, self.level),
            self.ep_t + d.long(),
            e_ret,
            e_len,
            e_out,
            e_gs,
            e_cs,
            e_lv,
        )

    def step(self, actions):
        if INPLACE:
            reward, terminated, truncated, done, old, pos, npos = self._g(actions)
            self.flat.index_fill_(0, self.agent_base + old, 0)
            self.flat.index_fill_(0, self.agent_base + pos, 1)
            ids = done.nonzero().squeeze(1)
            if len(ids):
                self.obs.index_copy_(0, ids, self.planes_bank.index_select(0, self.level.index_select(0, ids)))
                self.flat.index_fill_(0, self.agent_base.index_select(0, ids) + npos.index_select(0, ids), 1)
            self.view.pos = self.pos
            return reward, terminated, truncated
        (
            reward,
            terminated,
            truncated,
            done,
            old,
            pos,
            npos,
            t,
            ret,
            goal,
            proxy,
            extra,
            level,
            ep,
            e_ret,
            e_len,
            e_out,
            e_gs,
            e_cs,
            e_lv,
        ) = self._g(actions)
        self.flat.index_fill_(0, self.agent_base + old, 0)
        self.flat.index_fill_(0, self.agent_base + pos, 1)
        ids = done.nonzero().squeeze(1)
        if len(ids):  # obs rows of the finished envs: the level's planes, the agent at its start
            self.obs.index_copy_(0, ids, self.planes_bank.index_select(0, level.index_select(0, ids)))
            self.flat.index_fill_(0, self.agent_base.index_select(0, ids) + npos.index_select(0, ids), 1)
        self.pos, self.t, self.ret, self.goal, self.proxy, self.extra_c, self.level, self.ep_t = (
            npos,
            t,
            ret,
            goal,
            proxy,
            extra,
            level,
            ep,
        )
        self.view.pos = npos
        e = self.episodes
        e.done, e.ret, e.length, e.outcome, e.goal_score, e.capability_score, e.level = (
            done,
            e_ret,
            e_len,
            e_out,
            e_gs,
            e_cs,
            e_lv,
        )
        return reward, terminated, truncated


def make(cls, B, NL):
    core = cls(E.task_class(ENV).from_dials(**DIALS), B, "train", NL, "cpu", True)
    core.reset(0)
    return core


def check_hash():
    s = np.random.default_rng(0).integers(0, 2**63, 1000).astype(np.uint64)
    j = np.random.default_rng(1).integers(0, 10**6, 1000)
    a = R.episode_indices(s, j, 977)
    b = episode_indices_t(torch.from_numpy(s.view(np.int64)), torch.from_numpy(j), 977).numpy()
    print("torch episode_indices == numpy:", np.array_equal(a, b))


def equal(NL, B=256, steps=300, compile=True):
    check_hash()
    acts = torch.randint(0, 4, (steps, B), generator=torch.Generator().manual_seed(1))
    a, c = make(GridCore, B, NL), make(FusedCore, B, NL).setup(compile)
    bad = 0
    for i in range(steps):
        ra, rc = a.step(acts[i]), c.step(acts[i])
        pairs = [
            ("obs", a.obs, c.obs),
            ("reward", ra[0], rc[0]),
            ("term", ra[1], rc[1]),
            ("trunc", ra[2], rc[2]),
            ("pos", a.pos, c.pos),
            ("extra", a.extra, c.extra_c),
            ("level", a.level, c.level),
        ]
        pairs += [
            (f"ep.{f}", getattr(a.episodes, f), getattr(c.episodes, f))
            for f in ("done", "ret", "length", "outcome", "goal_score", "capability_score", "level")
        ]
        for name, x, y in pairs:
            if not torch.equal(x, y):
                bad += 1
                if bad < 5:
                    print(f"step {i}: {name} differs")
    print(
        f"fused NL={NL} B={B} steps={steps} compiled={compile}: {'BIT-IDENTICAL' if not bad else f'{bad} mismatches'}"
    )


def bench(B, NL, rounds=7):
    acts = torch.randint(0, 4, (64, B), generator=torch.Generator().manual_seed(0))
    eager = make(GridCore, B, NL)
    fe = make(FusedCore, B, NL).setup(compile=False)
    fc = make(FusedCore, B, NL).setup()
    t0 = time.perf_counter()
    fc.step(acts[0])
    tc = time.perf_counter() - t0
    for i in range(1, 150):
        for c in (eager, fe, fc):
            c.step(acts[i % 64])
    n = max(20, int(0.2 / (B * 2e-7)))
    res = {"eager": [], "fused-eager": [], "fused-compiled": []}
    for _ in range(rounds):
        for k, c in zip(res, (eager, fe, fc), strict=False):
            t0 = time.perf_counter()
            for i in range(n):
                c.step(acts[i % 64])
            res[k].append((time.perf_counter() - t0) / n)
    base = res["eager"]
    print(
        f"B={B} NL={NL} (compile {tc:.1f}s): "
        + "; ".join(
            f"{k} {statistics.median(v) * 1e6:.0f}us {B / statistics.median(v) / 1e6:.2f}M SPS x{statistics.median([b / x for b, x in zip(base, v, strict=False)]):.2f}"
            for k, v in res.items()
        ),
        flush=True,
    )


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "equal":
        equal(int(sys.argv[2]), compile=sys.argv[3:4] != ["eager"])
    elif cmd == "bench":
        bench(int(sys.argv[2]), int(sys.argv[3]))


STATE = ("pos", "t", "ret", "goal", "proxy", "extra_c", "level", "ep_t")


def aoti(fc):
    """AOTInductor: the graph as a pure function of its state, exported and compiled ahead of time;
    called without dynamo's guards or AOTAutograd's Python wrappers."""
    import copy

    class M(torch.nn.Module):
        def forward(
            self, actions, flat, pos, t, ret, goal, proxy, extra_c, level, ep_t, e_ret, e_len, e_out, e_gs, e_cs, e_lv
        ):
            c = copy.copy(fc)
            c.flat, c.pos, c.t, c.ret, c.goal, c.proxy, c.extra_c, c.level, c.ep_t = (
                flat,
                pos,
                t,
                ret,
                goal,
                proxy,
                extra_c,
                level,
                ep_t,
            )
            c.view = copy.copy(fc.view)
            c.episodes = copy.copy(fc.episodes)
            e = c.episodes
            e.ret, e.length, e.outcome, e.goal_score, e.capability_score, e.level = (
                e_ret,
                e_len,
                e_out,
                e_gs,
                e_cs,
                e_lv,
            )
            return fc.__class__._graph(c, actions)

    e = fc.episodes
    def args(a):
        return (
            a,
            fc.flat,
            fc.pos,
            fc.t,
            fc.ret,
            fc.goal,
            fc.proxy,
            fc.extra_c,
            fc.level,
            fc.ep_t,
            e.ret,
            e.length,
            e.outcome,
            e.goal_score,
            e.capability_score,
            e.level,
        )
    a0 = torch.zeros(fc.num_envs, dtype=torch.long)
    t0 = time.perf_counter()
    ep = torch.export.export(M(), args(a0), strict=False)
    path = torch._inductor.aoti_compile_and_package(ep, package_path=f"/tmp/fused_{fc.num_envs}.pt2")
    runner = torch._inductor.aoti_load_package(path)
    print(f"AOTI export+compile {time.perf_counter() - t0:.1f}s")
    return lambda a: runner(*args(a))


def split(B, NL, n=300):
    """Time the compiled graph alone vs the eager obs tail of FusedCore.step."""
    acts = torch.randint(0, 4, (64, B), generator=torch.Generator().manual_seed(0))
    fc = make(FusedCore, B, NL).setup()
    for i in range(150):
        fc.step(acts[i % 64])
    g = fc._g
    if os.environ.get("SKIPGUARD"):  # after warm-up: run only the guards that tell graphs apart
        torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
    if os.environ.get("AOTI"):
        g = aoti(fc)
    tg, tt = [], []
    for _r in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            g(acts[i % 64])
        tg.append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for i in range(n):
            fc.step(acts[i % 64])
        tt.append((time.perf_counter() - t0) / n)
    a, b = statistics.median(tg), statistics.median(tt)
    print(
        f"B={B}: full fused step {b * 1e6:.0f}us; compiled graph alone {a * 1e6:.0f}us ({a / b:.0%}); eager obs tail ~{(b - a) * 1e6:.0f}us"
    )


if __name__ == "__main__" and sys.argv[1] == "split":
    split(int(sys.argv[2]), int(sys.argv[3]))
