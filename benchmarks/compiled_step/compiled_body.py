# ruff: noqa: E501, E402
"""Scratch (feasibility study, not product code): a torch.compile'd GridCore step on the CPU.

    OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1 .venv/bin/python compiled_body.py <cmd> [args]

cmds: phases B NL | explain | bench B NL [mode] | equal NL [steps] [B]
"""

import os
import statistics
import sys
import time

import torch
import torch._dynamo

import capgap.envs as E
from capgap.envs.core import GridCore
from capgap.envs.task import read_flat

torch.set_num_threads(1)
import torch._inductor.config as _cfg

if os.environ.get("NOVEC"):
    _cfg.cpp.simdlen = 1  # scalar C++ loops: inductor's vectorised gathers are ~2.5x slower than aten's
if os.environ.get("NOASSERT"):
    _cfg.assert_indirect_indexing = False
FILL = os.environ.get("FILL", "outside")
ENV, DIALS = "capgap/CheeseCorner-v0", dict(size=13, max_steps=128)


class CompiledCore(GridCore):
    """GridCore whose fixed-shape part (move, rules, obs writes, done) is one compiled graph;
    the data-dependent part (nonzero, _record, level source, _load) stays eager."""

    def _body(self, actions):
        old = self.pos
        new = old + self.move.index_select(0, actions.long())
        pos = torch.where(read_flat(self.flat, self.base + new).bool(), old, new)
        if FILL == "outside":  # obs untouched in the graph: agent-plane writes done eagerly after it
            self.pos = self.view.pos = pos
            self.t += 1
            here = read_flat(self.flat, self.view.under()).t()
            here = torch.cat([here[:, :1], torch.ones_like(here[:, 1:2]), here[:, 2:]], 1)  # agent plane reads 1 at pos
            return (*self._rules(here), old, pos)
        if FILL == "index_put":  # inductor re-places index_put_ into the input; index_fill_ became 2 full obs copies
            self.flat.index_put_((self.agent_base + old,), self._zero)
            self.flat.index_put_((self.agent_base + pos,), self._one)
        else:
            self.flat.index_fill_(0, self.agent_base + old, 0)
            self.flat.index_fill_(0, self.agent_base + pos, 1)
        self.pos = self.view.pos = pos
        self.t += 1
        here = read_flat(self.flat, self.view.under()).t()
        return self._rules(here)

    def _rules(self, here):
        ev = self.task.step(self.view, here)
        reward = ev.reward * (1.0 - self._decay * self.t)
        self.ret += reward
        self.goal += ev.goal_gain * ~self.proxy
        self.proxy |= ev.proxy
        terminated = ev.terminated
        truncated = (self.t >= self.task.max_steps) & ~terminated
        done = terminated | truncated
        return reward, terminated, truncated, done

    def compile(self, mode="default", fullgraph=True):
        self._zero, self._one = torch.zeros((), dtype=torch.uint8), torch.ones((), dtype=torch.uint8)
        self._cbody = torch.compile(self._body, mode=mode, fullgraph=fullgraph, dynamic=False)
        return self

    def fixed(self, actions, f=None):
        out = (f or self._cbody)(actions)
        if len(out) > 4:
            self.flat.index_fill_(0, self.agent_base + out[4], 0)
            self.flat.index_fill_(0, self.agent_base + out[5], 1)
        return out

    def step(self, actions):
        out = self._cbody(actions)
        reward, terminated, truncated, done = out[:4]
        if len(out) > 4:
            self.flat.index_fill_(0, self.agent_base + out[4], 0)
            self.flat.index_fill_(0, self.agent_base + out[5], 1)
        self.view.pos = self.pos  # (the compiled graph replays attribute writes; keep View's cache honest)
        self.episodes.done = done
        ids = done.nonzero().squeeze(1)
        if len(ids):
            self._record(ids)
            if self.autoreset:
                self.reset_done(ids)
        return reward, terminated, truncated


def _eager_body(self, actions):
    """GridCore.step's fixed-shape part, verbatim (index_fill_ in place)."""
    old = self.pos
    new = old + self.move.index_select(0, actions.long())
    pos = torch.where(read_flat(self.flat, self.base + new).bool(), old, new)
    self.flat.index_fill_(0, self.agent_base + old, 0)
    self.flat.index_fill_(0, self.agent_base + pos, 1)
    self.pos = self.view.pos = pos
    self.t += 1
    here = read_flat(self.flat, self.view.under()).t()
    ev = self.task.step(self.view, here)
    reward = ev.reward * (1.0 - self._decay * self.t)
    self.ret += reward
    self.goal += ev.goal_gain * ~self.proxy
    self.proxy |= ev.proxy
    terminated = ev.terminated
    truncated = (self.t >= self.task.max_steps) & ~terminated
    return reward, terminated, truncated, terminated | truncated


def make(cls, B, NL):
    core = cls(E.task_class(ENV).from_dials(**DIALS), B, "train", NL, "cpu", True)
    core.reset(0)
    return core


def actions_table(B, n=64, seed=0):
    return torch.randint(0, 4, (n, B), generator=torch.Generator().manual_seed(seed))


def phases(B, NL, n=300):
    """Eager step split into timed phases."""
    core = make(CompiledCore, B, NL)
    core._cbody = core._body
    acts = actions_table(B)
    for i in range(200):
        core.step(acts[i % 64])
    tm = dict(body=0.0, nonzero_record=0.0, source_next=0.0, load=0.0)
    pc = time.perf_counter
    t_all = pc()
    for i in range(n):
        t0 = pc()
        _r, _te, _tr, done = core._body(acts[i % 64])
        core.episodes.done = done
        t1 = pc()
        ids = done.nonzero().squeeze(1)
        if len(ids):
            core._record(ids)
        t2 = pc()
        lv = core.source.next(ids.cpu().numpy()) if len(ids) else None
        t3 = pc()
        if len(ids):
            core._load(ids, lv)
        t4 = pc()
        tm["body"] += t1 - t0
        tm["nonzero_record"] += t2 - t1
        tm["source_next"] += t3 - t2
        tm["load"] += t4 - t3
    tot = pc() - t_all
    print(
        f"B={B} NL={NL}: {tot / n * 1e6:.0f} us/step ({B * n / tot / 1e6:.2f}M SPS); "
        + ", ".join(f"{k} {v / n * 1e6:.0f}us ({v / tot:.0%})" for k, v in tm.items())
    )


def explain():
    core = make(GridCore, 1024, 0)
    a = actions_table(1024)[0]
    ex = torch._dynamo.explain(core.step)(a)
    print("whole GridCore.step:", ex.graph_count, "graphs,", ex.graph_break_count, "breaks")
    for b in ex.break_reasons:
        print("  break:", str(b.reason)[:300])
        print("    at", [str(f)[:160] for f in b.user_stack[-1:]])
    torch._dynamo.reset()
    c2 = make(CompiledCore, 1024, 0)
    ex = torch._dynamo.explain(c2._body)(a)
    print("fixed-shape body:", ex.graph_count, "graphs,", ex.graph_break_count, "breaks, ops", ex.op_count)


def time_block(core, acts, n):
    t0 = time.perf_counter()
    for i in range(n):
        core.step(acts[i % 64])
    return (time.perf_counter() - t0) / n


def bench(B, NL, mode="default", rounds=7, whole=False):
    acts = actions_table(B)
    eager = make(GridCore, B, NL)
    comp = make(CompiledCore, B, NL)
    t0 = time.perf_counter()
    comp.compile(mode)
    comp.step(acts[0])
    tc = time.perf_counter() - t0
    for i in range(1, 150):
        comp.step(acts[i % 64])
        eager.step(acts[i % 64])
    n = max(20, int(0.25 / (B * 2.5e-7)))  # ~0.25 s blocks
    te, tcs = [], []
    for _ in range(rounds):
        te.append(time_block(eager, acts, n))
        tcs.append(time_block(comp, acts, n))
    me, mc = statistics.median(te), statistics.median(tcs)
    ratios = [a / b for a, b in zip(te, tcs, strict=False)]
    print(
        f"B={B} NL={NL} mode={mode}: compile {tc:.1f}s; eager {me * 1e6:.0f}us ({B / me / 1e6:.2f}M SPS), "
        f"compiled {mc * 1e6:.0f}us ({B / mc / 1e6:.2f}M SPS); speedup median {statistics.median(ratios):.2f}x "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]",
        flush=True,
    )


def bench_body(B, mode="default", rounds=7):
    """Fixed-shape body alone (no done handling / resets): the ceiling if resets were free."""
    acts = actions_table(B)
    a = make(GridCore, B, 1)

    def ref(x):  # GridCore.step up to `done`, eager
        # (same code as CompiledCore._body with index_fill_)
        return CompiledCore._body.__wrapped__(a, x) if hasattr(CompiledCore._body, "__wrapped__") else _eager_body(a, x)

    c = make(CompiledCore, B, 1).compile(mode)
    t0 = time.perf_counter()
    c._cbody(acts[0])
    tc = time.perf_counter() - t0

    def blk(f, n):
        t0 = time.perf_counter()
        for i in range(n):
            f(acts[i % 64])
        return (time.perf_counter() - t0) / n

    n = max(20, int(0.2 / (B * 1.5e-7)))
    te, tcs = [], []
    for _ in range(rounds):
        te.append(blk(ref, n))
        tcs.append(blk(c.fixed, n))
    me, mc = statistics.median(te), statistics.median(tcs)
    ratios = [x / y for x, y in zip(te, tcs, strict=False)]
    print(
        f"body-only B={B}: compile {tc:.1f}s; eager {me * 1e6:.0f}us ({B / me / 1e6:.2f}M SPS), compiled {mc * 1e6:.0f}us "
        f"({B / mc / 1e6:.2f}M SPS); speedup median {statistics.median(ratios):.2f}x",
        flush=True,
    )


def equal(NL, steps=200, B=256):
    acts = torch.randint(0, 4, (steps, B), generator=torch.Generator().manual_seed(1))
    a, c = make(GridCore, B, NL), make(CompiledCore, B, NL).compile()
    bad = 0
    for i in range(steps):
        ra = a.step(acts[i])
        rc = c.step(acts[i])
        ea, ec = a.episodes, c.episodes
        pairs = [
            ("obs", a.obs, c.obs),
            ("reward", ra[0], rc[0]),
            ("term", ra[1], rc[1]),
            ("trunc", ra[2], rc[2]),
            ("ret", a.ret, c.ret),
            ("goal", a.goal, c.goal),
        ]
        pairs += [
            (f"ep.{f}", getattr(ea, f), getattr(ec, f))
            for f in ("done", "ret", "length", "outcome", "goal_score", "capability_score", "level")
        ]
        for name, x, y in pairs:
            if not torch.equal(x, y):
                bad += 1
                if bad < 5:
                    print(f"step {i}: {name} differs (max abs {(x.double() - y.double()).abs().max():.3g})")
    eps = int(a.episodes.length.gt(0).sum())
    print(
        f"NL={NL} B={B} steps={steps}: {'BIT-IDENTICAL' if bad == 0 else f'{bad} mismatches'} "
        f"(obs, reward, term, trunc, ret, goal, episode stats; envs with a finished episode: {eps})"
    )


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "phases":
        phases(int(args[0]), int(args[1]))
    elif cmd == "explain":
        explain()
    elif cmd == "bench":
        bench(int(args[0]), int(args[1]), *(args[2:3] or ["default"]))
    elif cmd == "body":
        bench_body(int(args[0]), *(args[1:2] or ["default"]))
    elif cmd == "equal":
        equal(int(args[0]), *(int(x) for x in args[1:]))
