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
    ppo.train(ppo.Args(rung="small", total_steps=4096 * 4, eval_every=10**12, eval_episodes=8, out=out,
                       threads=1, progress=False))
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
"""


def minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not keep_freed_memory(), reason="the C library is not glibc: nothing to tune")
def test_training_keeps_freed_memory() -> None:
    # measured: ~540k minor page faults with glibc's defaults for 4 iterations of the small rung, ~70k kept
    default, kept = minor_faults("default"), minor_faults("keep")
    assert kept * 3 < default, (default, kept)
