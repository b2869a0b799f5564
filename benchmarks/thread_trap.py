"""The thread trap: torch's default thread count when another process keeps a core busy.

    python benchmarks/thread_trap.py [--batch 4096] [--seconds 1] [--env capgap/CheeseCorner-v0]

torch runs its CPU ops on one thread per core by default, and the threads of an op wait for each
other at its end. When another process keeps one of the cores busy (a second training run, a
test suite, a browser), every op waits for the thread that shares a core with it, and the whole
computation runs at the speed of the unluckiest thread, or slower. This script measures it: the
batched engine of one env (random actions, auto-reset; ``benchmarks/env_speed.py``'s timing) with
1 thread and with torch's default (one per core), first on the machine as it is, then with one
busy process (a pure-Python spin loop this script starts and stops) on the side. Every figure is
the best of three timings. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import torch
from env_speed import capgap_sps


def _spin(stop: mp.Event) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def measure(env_id: str, batch: int, seconds: float, threads: int) -> float:
    torch.set_num_threads(threads)
    return capgap_sps(env_id, batch, "train", seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="capgap/CheeseCorner-v0")
    p.add_argument("--batch", type=int, default=4096, help="envs in the batch (B)")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per timing (best of 3)")
    a = p.parse_args()
    default = torch.get_num_threads()
    cores = os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, "
          f"default threads {default}; {a.env} train split, B={a.batch:,}\n")
    rows = []
    for busy in (False, True):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,), daemon=True) if busy else None
        if spinner:
            spinner.start()
            time.sleep(0.5)
        try:
            one = measure(a.env, a.batch, a.seconds, 1)
            many = measure(a.env, a.batch, a.seconds, default)
        finally:
            if spinner:
                stop.set()
                spinner.join()
        rows.append((busy, one, many))
    print(f"| other load | 1 thread | {default} threads (torch default) | default / 1 thread |")
    print("|---|---:|---:|---:|")
    for busy, one, many in rows:
        print(f"| {'one core busy' if busy else 'none'} | {one / 1e6:.2f}M | {many / 1e6:.2f}M | {many / one:.2f}× |")


if __name__ == "__main__":
    main()
