"""Keeping freed memory: training stops mapping fresh pages for every minibatch (see capgap.train.allocator)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from capgap.train.allocator import keep_freed_memory

CHILD = r"""
import json, resource, sys, tempfile
import capgap.train.ppo as ppo
if sys.argv[1] == "default":
    ppo.keep_freed_memory = lambda: False
with tempfile.TemporaryDirectory() as out:
    ppo.train(ppo.Args(rung="small", total_steps=4096 * int(sys.argv[2]), eval_every=10**12, eval_episodes=8, out=out,
                       threads=1, progress=False))
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
"""


def minor_faults(mode: str, iterations: int) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(iterations)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def faults_per_iteration(mode: str) -> float:
    """Minor page faults per PPO iteration (the difference of a 6- and a 2-iteration run: start-up excluded)."""
    return (minor_faults(mode, 6) - minor_faults(mode, 2)) / 4


@pytest.mark.heavy
@pytest.mark.skipif(not keep_freed_memory(), reason="the C library is not glibc: nothing to tune")
def test_training_keeps_freed_memory() -> None:
    # measured per iteration of the small rung: 10k-70k minor page faults with glibc's defaults, 0 +- 250 kept
    default, kept = faults_per_iteration("default"), faults_per_iteration("keep")
    assert kept < 1_000 < 5_000 < default, (default, kept)
