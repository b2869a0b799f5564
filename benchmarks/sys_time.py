"""Where a sweep's CPU time goes: user vs kernel time, with and without keeping freed memory.

    python benchmarks/sys_time.py [--rungs tiny,small] [--iterations 20] [--parallel 2]

For each rung, ``--parallel`` one-thread training processes run side by side (as a local sweep
runs its trials, one per core), first with glibc's default malloc thresholds and then with
``capgap.train.allocator.keep_freed_memory`` (what ``capgap train`` does). Each process trains
CheeseCorner at its defaults for ``--iterations`` PPO iterations (evaluation off) and reports
its user and system CPU seconds, minor page faults and training steps/s; the table shows their
sums and the mean steps/s, both modes measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import torch

CHILD = r"""
import json, resource, sys, tempfile
import capgap.train.ppo as ppo
mode, rung, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "default":
    ppo.keep_freed_memory = lambda: False
batch = ppo.Args().num_envs * ppo.Args().num_steps
with tempfile.TemporaryDirectory() as out:
    run = ppo.train(ppo.Args(rung=rung, total_steps=batch * iterations, eval_every=10**12, eval_episodes=8,
                             out=out, threads=1, progress=False))
    sps = json.loads((run / "done.json").read_text())["train_sps"]
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"user": ru.ru_utime, "sys": ru.ru_stime, "minflt": ru.ru_minflt, "sps": sps}))
"""


def measure(mode: str, rung: str, iterations: int, parallel: int) -> dict[str, float]:
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, mode, rung, str(iterations)], stdout=subprocess.PIPE,
                              text=True) for _ in range(parallel)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    total = {k: sum(o[k] for o in outs) for k in ("user", "sys", "minflt")}
    return {**total, "sps": sum(o["sps"] for o in outs) / parallel}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rungs", default="tiny,small")
    p.add_argument("--iterations", type=int, default=20, help="PPO iterations per process (4,096 steps each)")
    p.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="processes side by side")
    a = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
          f"{platform.python_version()}; {a.parallel} one-thread processes side by side, "
          f"{a.iterations} iterations each\n")
    print("| rung | malloc | user s | system s | system % of CPU | minor faults | steps/s per process |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for rung in a.rungs.split(","):
        for mode, label in (("default", "glibc defaults"), ("keep", "keep_freed_memory")):
            m = measure(mode, rung, a.iterations, a.parallel)
            share = 100 * m["sys"] / (m["user"] + m["sys"])
            print(f"| {rung} | {label} | {m['user']:.1f} | {m['sys']:.1f} | {share:.1f}% | {m['minflt']:,} | "
                  f"{m['sps']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
