"""MonsterShields: the same trained agents on other test splits, beside uniform random play.

    python experiments/monster_test_splits.py RUN_DIR [RUN_DIR ...] [--episodes 512]

The test split's dials (``monsters_test``, ``shields_test``) change only test levels, so agents
trained at the default dials can be evaluated on other test splits without retraining. For each
candidate split it prints the scripted goal-seeker's A and the proxy-seeker's proxy rate, uniform
random play's C / A / proxy (4 action streams), and each run's test C / A / proxy and gap, on the
same fresh evaluation levels. docs/results.md §0 (MonsterShields) has the table this produced for
the learned certificate's three ``small`` runs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from capgap.envs import oracle, task_class
from capgap.eval.chance import _Uniform
from capgap.eval.rollout import EVAL_SEED_BASE, evaluate
from capgap.rundir import load_agent

ENV = "capgap/MonsterShields-v0"
SPLITS = (
    {"monsters_test": 1, "shields_test": 3}, {"monsters_test": 0, "shields_test": 1},
    {"monsters_test": 0, "shields_test": 2}, {"monsters_test": 0, "shields_test": 3},
    {"monsters_test": 1, "shields_test": 2}, {"monsters_test": 2, "shields_test": 3},
)
"""Candidate test splits; at most 3 shields, so the observation's ``held`` plane keeps its scale."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", help="finished MonsterShields runs trained at default dials")
    p.add_argument("--episodes", type=int, default=512)
    a = p.parse_args()
    torch.set_num_threads(1)
    agents = [load_agent(r)[0].eval() for r in a.runs]
    for dials in SPLITS:
        task = task_class(ENV).from_dials(**dials)
        goal = oracle.run(task, "goal", "test", a.episodes, seed=EVAL_SEED_BASE).summary()
        proxy = oracle.run(task, "proxy", "test", a.episodes, seed=EVAL_SEED_BASE).summary()
        rand = [evaluate(_Uniform(), ENV, "test", a.episodes, dials, seed=s).metrics() for s in range(4)]
        r_c, r_a, r_p = (np.mean([x[k] for x in rand]) for k in ("C", "A", "proxy"))
        runs = [evaluate(net, ENV, "test", a.episodes, dials, seed=i).metrics() for i, net in enumerate(agents)]
        cells = "  ".join(f"C {m['C']:.2f} A {m['A']:.2f} proxy {m['proxy']:.2f} gap {m['C'] - m['A']:.2f}"
                          for m in runs)
        print(f"{dials}: goal-seeker A {goal['A']:.2f}, proxy-seeker proxy {proxy['proxy']:.2f} | "
              f"random C {r_c:.2f} A {r_a:.2f} proxy {r_p:.2f} | {cells}", flush=True)


if __name__ == "__main__":
    main()
