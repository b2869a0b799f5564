# ruff: noqa: E501
"""Scratch (feasibility ceiling): CheeseCorner's whole step for a FIXED level set as ONE hand-written
C++ loop over envs (torch.utils.cpp_extension.load_inline): move, rules, stats, next level index
(splitmix64, as envs.rng.episode_indices), reset from the level bank. What a single native call per
step costs, i.e. how far a perfect compiler could take the engine on this CPU.

    OMP_NUM_THREADS=1 .venv/bin/python native_step.py equal|bench [B]
"""

import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.cpp_extension import load_inline

import capgap.envs as E
from capgap.envs import rng as R
from capgap.envs.core import GridCore

torch.set_num_threads(1)
ENV, DIALS, NL = "capgap/CheeseCorner-v0", dict(size=13, max_steps=128), 100

SRC = r"""
#include <torch/extension.h>
#include <cstring>
static inline uint64_t mix64(uint64_t z){ z=(z^(z>>30))*0xBF58476D1CE4E5B9ULL; z=(z^(z>>27))*0x94D049BB133111EBULL; return z^(z>>31); }
void step(torch::Tensor obs, torch::Tensor pos, torch::Tensor t, torch::Tensor ret, torch::Tensor goal, torch::Tensor proxy,
          torch::Tensor extra, torch::Tensor level, torch::Tensor seeds, torch::Tensor ep, torch::Tensor actions,
          torch::Tensor move, torch::Tensor region, torch::Tensor bplanes, torch::Tensor bstart, torch::Tensor bextra,
          torch::Tensor reward, torch::Tensor term, torch::Tensor trunc, torch::Tensor done,
          torch::Tensor e_ret, torch::Tensor e_len, torch::Tensor e_out, torch::Tensor e_gs, torch::Tensor e_cs, torch::Tensor e_lv,
          int64_t max_steps, double decay, int64_t num_levels, int64_t ep_salt, int64_t index_bits) {
  const int64_t B = pos.size(0), C = obs.size(1), HW = obs.size(2) * obs.size(3), row = C * HW;
  uint8_t* o = obs.data_ptr<uint8_t>(); int64_t* p = pos.data_ptr<int64_t>(); int64_t* tt = t.data_ptr<int64_t>();
  float* r = ret.data_ptr<float>(); float* g = goal.data_ptr<float>(); bool* px = proxy.data_ptr<bool>();
  int64_t* ex = extra.data_ptr<int64_t>(); int64_t* lv = level.data_ptr<int64_t>(); const int64_t* sd = seeds.data_ptr<int64_t>();
  int64_t* e = ep.data_ptr<int64_t>(); const int64_t* a = actions.data_ptr<int64_t>(); const int64_t* mv = move.data_ptr<int64_t>();
  const bool* reg = region.data_ptr<bool>(); const uint8_t* bp = bplanes.data_ptr<uint8_t>(); const int64_t* bs = bstart.data_ptr<int64_t>();
  const int64_t* bx = bextra.data_ptr<int64_t>(); float* rw = reward.data_ptr<float>(); bool* te = term.data_ptr<bool>();
  bool* tr = trunc.data_ptr<bool>(); bool* dn = done.data_ptr<bool>(); float* er = e_ret.data_ptr<float>(); int64_t* el = e_len.data_ptr<int64_t>();
  int8_t* eo = e_out.data_ptr<int8_t>(); float* eg = e_gs.data_ptr<float>(); float* ec = e_cs.data_ptr<float>(); int64_t* elv = e_lv.data_ptr<int64_t>();
  const int64_t xs = extra.stride(0);
  for (int64_t i = 0; i < B; ++i) {
    uint8_t* oi = o + i * row;
    int64_t old = p[i], nw = old + mv[a[i]];
    int64_t ps = oi[nw] ? old : nw;                      // walls block
    oi[HW + old] = 0; oi[HW + ps] = 1; p[i] = ps;
    int64_t ti = ++tt[i];
    bool gl = oi[2 * HW + ps] != 0;                       // cheese under the agent
    bool prx = reg[ps] && ex[i * xs] != 0;
    float gf = gl ? 1.0f : 0.0f;
    float rew = gf * (1.0f - (float)decay * (float)ti);  // as torch: float32 ops (decay rounded to float32)
    r[i] += rew; g[i] += gf * (float)(!px[i]); px[i] = px[i] || prx;
    bool tru = (ti >= max_steps) && !gl, d = gl || tru;
    rw[i] = rew; te[i] = gl; tr[i] = tru; dn[i] = d;
    if (d) {
      float gg = std::min(std::max(g[i], 0.0f), 1.0f); bool reached = gg >= 1.0f - 1e-5f;
      er[i] = r[i]; el[i] = ti; eo[i] = reached ? 0 : (px[i] ? 1 : 2);
      eg[i] = reached ? 1.0f : gg; ec[i] = (reached || px[i]) ? 1.0f : gg; elv[i] = lv[i];
      uint64_t h = mix64(mix64((uint64_t)sd[i] ^ (uint64_t)ep_salt) + (uint64_t)e[i] * 0x9E3779B97F4A7C15ULL) >> (64 - index_bits);
      int64_t L = (int64_t)(h % (uint64_t)num_levels); e[i] += 1;
      std::memcpy(oi, bp + L * row, row); int64_t st = bs[L]; oi[HW + st] = 1;
      p[i] = st; tt[i] = 0; r[i] = 0; g[i] = 0; px[i] = false; ex[i * xs] = bx[L]; lv[i] = L;
    }
  }
}
"""
mod = None


def build():
    global mod
    t0 = time.perf_counter()
    mod = load_inline("capgap_native_step", cpp_sources=SRC, functions=["step"], extra_cflags=["-O3"], verbose=False)
    print(f"native build {time.perf_counter() - t0:.1f}s")


class NativeCore(GridCore):
    def setup(self):
        self.bp, self.bs, self.bx, _ = self.source.bank
        self.bp = self.bp.reshape(self.bp.shape[0], -1).contiguous()
        self.bx = self.bx[:, 0].contiguous()
        self.seeds_t = torch.from_numpy(self.source.seeds.view(np.int64).copy())
        self.ep_t = torch.from_numpy(self.source.episode.copy())
        self.region = self.task._region_t.contiguous()
        b = self.num_envs
        self.out = (torch.zeros(b), torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool))
        e = self.episodes
        for f in ("ret", "length", "outcome", "goal_score", "capability_score", "level", "done"):
            setattr(e, f, getattr(e, f).clone())
        self.salt = int(np.uint64(R.salt("episode")).astype(np.int64))
        self.decay32 = float(np.float32(self._decay))
        return self

    def step(self, actions):
        e = self.episodes
        rw, te, tr = self.out
        mod.step(
            self.obs,
            self.pos,
            self.t,
            self.ret,
            self.goal,
            self.proxy,
            self.extra,
            self.level,
            self.seeds_t,
            self.ep_t,
            actions,
            self.move,
            self.region,
            self.bp,
            self.bs,
            self.bx,
            rw,
            te,
            tr,
            e.done,
            e.ret,
            e.length,
            e.outcome,
            e.goal_score,
            e.capability_score,
            e.level,
            self.task.max_steps,
            self.decay32,
            self.num_levels,
            self.salt,
            R.INDEX_BITS,
        )
        return rw, te, tr


def make(cls, B):
    c = cls(E.task_class(ENV).from_dials(**DIALS), B, "train", NL, "cpu", True)
    c.reset(0)
    return c


def equal(B=256, steps=300):
    acts = torch.randint(0, 4, (steps, B), generator=torch.Generator().manual_seed(1))
    a, c = make(GridCore, B), make(NativeCore, B).setup()
    bad = 0
    for i in range(steps):
        ra, rc = a.step(acts[i]), c.step(acts[i])
        pairs = [("obs", a.obs, c.obs), ("reward", ra[0], rc[0]), ("term", ra[1], rc[1]), ("trunc", ra[2], rc[2])]
        pairs += [
            (f"ep.{f}", getattr(a.episodes, f), getattr(c.episodes, f))
            for f in ("done", "ret", "length", "outcome", "goal_score", "capability_score", "level")
        ]
        for name, x, y in pairs:
            if not torch.equal(x, y):
                bad += 1
                if bad < 5:
                    print(f"step {i}: {name} differs")
    print(f"native NL={NL} B={B} steps={steps}: {'BIT-IDENTICAL' if not bad else f'{bad} mismatches'}")


def bench(B, rounds=7):
    acts = torch.randint(0, 4, (64, B), generator=torch.Generator().manual_seed(0))
    a, c = make(GridCore, B), make(NativeCore, B).setup()
    for i in range(150):
        a.step(acts[i % 64])
        c.step(acts[i % 64])
    n = max(20, int(0.2 / (B * 1.5e-7)))
    te, tn = [], []
    for _ in range(rounds):
        for core, lst in ((a, te), (c, tn)):
            t0 = time.perf_counter()
            for i in range(n):
                core.step(acts[i % 64])
            lst.append((time.perf_counter() - t0) / n)
    me, mn = statistics.median(te), statistics.median(tn)
    print(
        f"B={B} NL={NL}: eager {me * 1e6:.0f}us ({B / me / 1e6:.2f}M SPS); native one-call {mn * 1e6:.0f}us ({B / mn / 1e6:.2f}M SPS); "
        f"x{statistics.median([x / y for x, y in zip(te, tn, strict=False)]):.1f}",
        flush=True,
    )


if __name__ == "__main__":
    build()
    if sys.argv[1] == "equal":
        equal()
    else:
        for b in map(int, sys.argv[2:] or ["1024", "4096", "16384"]):
            bench(b)
