"""The training configurations the tests share, stated once (keyword arguments of ``capgap.train.ppo.Args``).

Every quick run trains on the same 7x7 CheeseCorner maze with one thread and no progress bar; they
differ only in how much they train and evaluate.
"""

from __future__ import annotations

from typing import Any

MAZE = ("size=7", "max_steps=40")
"""The small CheeseCorner maze every quick test run trains on."""

QUIET: dict[str, Any] = dict(progress=False, threads=1)

SMALL: dict[str, Any] = dict(rung="nano", num_envs=64, num_steps=32, total_steps=64 * 32 * 6, eval_every=64 * 32 * 2,
                             eval_episodes=32, dials=MAZE, **QUIET)
"""A few seconds of training with three evaluations: the plumbing tests' run (logging, resume, fine-tuning)."""

QUICK: dict[str, Any] = dict(rung="nano", num_envs=32, num_steps=16, total_steps=32 * 16 * 2, eval_every=10**9,
                             eval_episodes=16, dials=MAZE, **QUIET)
"""Two PPO iterations and no evaluation after step 0: the seed-group tests' run."""

GMG: dict[str, Any] = dict(rung="tiny", total_steps=256 * 16 * 64, eval_every=256 * 16 * 32, eval_episodes=256,
                           dials=MAZE, inspect=True, **QUIET)
"""262k steps of the tiny rung: it learns the maze and misgeneralises (tests/test_train.py's science check),
then the inspection tools look inside it (tests/test_inspect.py). Trained once per test process, as the
session fixture ``gmg_run`` in conftest.py."""

LEARNS: dict[str, Any] = dict(rung="tiny", num_envs=64, num_steps=32, total_steps=64 * 32 * 60, eval_every=64 * 32 * 4,
                              eval_episodes=64, dials=("size=5", "max_steps=20"), **QUIET)
"""A tiny agent that learns a 5x5 maze well within its cap: train A >= 0.9 from about 33k of its 123k steps
(0.98, then 1.0; ~11 s to the cap). The competence tests' run (tests/test_stop.py): on the 7x7 maze a tiny
agent crosses 0.9 only after ~260k steps, and barely."""


def flags(config: dict[str, Any]) -> list[str]:
    """The ``capgap train`` command-line flags of a config above (for tests that run it as a process)."""
    out = []
    for k, v in config.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, tuple):
            out += [flag, *v]
        else:
            out += [flag, str(v)]
    return out
