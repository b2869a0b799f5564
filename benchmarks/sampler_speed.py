"""What a level sampler costs: training env-steps/s with ``plr`` and ``plr-oracle`` against ``dr``.

    python benchmarks/sampler_speed.py [--rung small] [--steps 65536] [--repeats 3] [--env capgap/CheeseCorner-v0]

Each repeat trains one run per sampler, in turn (dr, plr, plr-oracle, dr, ...), so that whatever else
the machine does weighs on all of them alike. Two figures per run: its training throughput in wall
time (``done.json``'s ``train_sps``: evaluations excluded), and env steps per CPU second of this
process (evaluations included, the same for every sampler), which other processes on the machine
barely move; the table gives the median per sampler and its ratio to ``dr``'s. The buffer is made
small enough (``--buffer``) that replay starts early, so the runs spend most of their steps with a
full buffer, as a long run does. One torch thread per run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
from pathlib import Path

import torch

from capgap.train.ppo import Args, train

SAMPLERS = ("dr", "plr", "plr-oracle")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="capgap/CheeseCorner-v0")
    p.add_argument("--rung", default="small")
    p.add_argument("--steps", type=int, default=65536)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--buffer", type=int, default=500, help="PLR buffer size (replay starts at half of it)")
    p.add_argument("--dials", nargs="*", default=["p_disambiguate=0.01"])
    a = p.parse_args()
    torch.set_num_threads(1)
    sps: dict[str, list[float]] = {s: [] for s in SAMPLERS}
    cpu: dict[str, list[float]] = {s: [] for s in SAMPLERS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for sampler in SAMPLERS:
                extra = {} if sampler == "dr" else {"buffer_size": a.buffer}
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                run = train(Args(env=a.env, rung=a.rung, seed=r, total_steps=a.steps, eval_every=a.steps,
                                 eval_episodes=16, dials=tuple(a.dials), sampler=sampler, threads=1, progress=False,
                                 out=str(Path(tmp) / sampler), **extra))
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                sps[sampler].append(json.loads((run / "done.json").read_text())["train_sps"])
                cpu[sampler].append(a.steps / (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; {a.env} "
          f"{' '.join(a.dials)}, rung {a.rung}, {a.steps:,} steps x {a.repeats} repeats, buffer {a.buffer}\n")
    print("| sampler | env-steps/s, wall (median) | runs | vs dr | env-steps per CPU s (median) | runs | vs dr |")
    print("|---|---:|---|---:|---:|---|---:|")
    base, cbase = statistics.median(sps["dr"]), statistics.median(cpu["dr"])
    for s in SAMPLERS:
        m, c = statistics.median(sps[s]), statistics.median(cpu[s])
        print(f"| {s} | {m:,.0f} | {', '.join(f'{x:,.0f}' for x in sps[s])} | {m / base:.2f}x | {c:,.0f} | "
              f"{', '.join(f'{x:,.0f}' for x in cpu[s])} | {c / cbase:.2f}x |")


if __name__ == "__main__":
    main()
