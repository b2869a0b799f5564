"""The worked example of docs/adding_an_env.md really works: pasted as the doc says (its file and
its registration, nothing else), it passes every test the suite runs for a registered env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENV_TESTS = ["test_envs.py", "test_rng.py", "test_certificate.py", "test_chance.py", "test_agents.py",
             "test_redteam.py"]
"""The files whose tests are parametrised over every registered env (``capgap.envs.TASKS``)."""


def _pytest(*args: str) -> str:
    here = Path(__file__).parent
    env = {**os.environ, "CAPGAP_DOCS_ENV": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, *(str(here / f) for f in ENV_TESTS)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=here.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    return out.stdout


def test_the_docs_example_env_passes_the_env_suite() -> None:
    ran = _pytest("-k", "CheeseTwins").strip().splitlines()[-1]
    assert " passed" in ran and "failed" not in ran and "error" not in ran, ran
    # as many tests as a registered env gets (CheeseCorner's count, collected in the same run)
    listed = _pytest("--collect-only", "-k", "CheeseCorner").splitlines()
    expected = sum("capgap/CheeseCorner-v0" in line for line in listed)
    assert int(ran.split(" passed")[0].split()[-1]) == expected > 0, (ran, expected)
