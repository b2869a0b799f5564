"""What chance scores on every env: the table behind docs/results.md §0.

    python experiments/chance_table.py                # every env at its default dials
    python experiments/chance_table.py --before       # at the dials the envs had before the calibration
    python experiments/chance_table.py --rung small --episodes 1024

For each env and split, on the evaluation levels (``capgap.eval.chance``): the uniform-random
policy, the rung's untrained networks (3 init seeds, mean), the scripted goal-seeker and the
proxy-seeker; test C, test A, test proxy rate and train A for each, and the calibrated scores of
the random and untrained policies (0 by construction for random; the untrained networks' land
within noise of it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import capgap.envs as E
from capgap.eval import chance

BEFORE: dict[str, dict[str, int]] = {
    "capgap/CheeseDish-v0": {"max_steps": 80},
    "capgap/ColourShape-v0": {"max_steps": 64},
    "capgap/FollowLeader-v0": {"max_steps": 64},
    "capgap/KeysChests-v0": {"max_steps": 64, "keys_test": 8},
    "capgap/MonsterShields-v0": {"max_steps": 48, "shields_test": 6},
}
"""The dials that differ from today's defaults in the envs as they were before chance calibration
(CheeseCorner and LavaShift did not change)."""


def rows(env_id: str, dials: dict[str, int], rung: str, episodes: int) -> list[str]:
    refs = chance.references(env_id, dials, episodes)
    init = chance.untrained_seeds(env_id, dials, rung, episodes=min(episodes, 512))
    scores = {p: {**{f"{k}_test": refs.score(p, "test")[k] for k in chance.SCORES},
                  "A_train": refs.score(p, "train")["A"]} for p in chance.POLICIES}
    scores["untrained"] = {k: float(np.mean([s[k] for s in init])) for k in ("C_test", "A_test", "proxy_test",
                                                                            "A_train")}
    out = []
    name = env_id.split("/")[-1] + (" (control)" if E.task_class(env_id).control else "")
    for policy in ("random", "untrained", "goal", "proxy"):
        s = scores[policy]
        hat = refs.calibrate(s)
        cells = [f"{s[k]:.2f}" for k in ("A_train", "C_test", "A_test", "proxy_test")]
        cells += ["n/a" if hat[k] != hat[k] else f"{hat[k]:+.2f}" for k in ("C_hat_test", "A_hat_test",
                                                                           "proxy_hat_test")]
        out.append(f"| {name} | {policy} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", action="store_true", help="the dials before the calibration (BEFORE)")
    p.add_argument("--rung", default="small", help="rung of the untrained networks")
    p.add_argument("--episodes", type=int, default=chance.REFERENCE_EPISODES, help="evaluation levels per split")
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    print("| env | policy | train A | test C | test A | test proxy | test Ĉ | test Â | test proxŷ |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for env_id in E.TASKS:
        dials = BEFORE.get(env_id, {}) if a.before else {}
        print("\n".join(rows(env_id, dials, a.rung, a.episodes)), flush=True)
    print(f"\n{a.episodes} evaluation levels per split; untrained: {a.rung}, init seeds "
          f"{', '.join(map(str, chance.UNTRAINED_SEEDS))}; {time.time() - t0:.0f} s.")


if __name__ == "__main__":
    main()
