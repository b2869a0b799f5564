"""The scaling study: C(N), A(N) and the gap over three orders of magnitude, on every env, each
agent trained to competence.

    capgap scaling --out sweeps/scaling [--envs ID ...] [--rungs nano..large] [--workers 2] [--dry-run]

One resumable command. For every registered env (the control included) and every rung from
``nano`` to ``large`` (~10^3 to ~10^6 parameters), it trains ``SEEDS_UP_TO_SMALL`` seeds of the
rungs up to ``small`` and ``SEEDS_ABOVE`` of the larger ones, each **to competence**
(``--until-learned``: train A >= 0.9 at two consecutive evaluations, then ``after_learned``
evaluations more; ``docs/metrics.md``), capped at ``CAP_FACTOR`` times the env's declared budget,
evaluating every ``1 / EVALS_PER_BUDGET`` of the budget on ``EPISODES`` fresh levels per split.
A run that reaches the cap is *not learned*: kept, and shown apart.

Layout: ``<out>/<env name>/<part>/`` is one sweep per env and seed set (``small``: nano..small,
``large``: base, large), all trained from one pool of workers (longest first); ``<out>/scaling.md``
and the figures are the report (:mod:`capgap.eval.scaling`), rewritten from whatever has finished
each time the command runs, so a study run in parts reports its parts. Before it trains, it prints
the cost model's estimate (:func:`estimate`); afterwards, the measured wall time.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from capgap.agents import rung as rung_of
from capgap.envs import TASKS, task_class
from capgap.train.ppo import Args
from capgap.train.sweep import Sweep, describe_estimate, estimate, run_sweeps

RUNGS = ("nano", "micro", "tiny", "small", "base", "large")
"""The ladder the study climbs: ~10^3 to ~10^6 parameters (``capgap rungs``)."""
SEEDS_UP_TO_SMALL = 5
"""Seeds per rung up to ``small`` (a headline needs >= 5)."""
SEEDS_ABOVE = 3
"""Seeds per rung above ``small`` (``base``, ``large``: 4-20x the compute of ``small`` per step)."""
CAP_FACTOR = 2
"""Step cap = this times the env's declared budget (what ``small`` needs to learn it): smaller rungs
get twice ``small``'s budget to learn before they count as not learned."""
EVALS_PER_BUDGET = 10
"""Evaluations per budget's worth of steps: competence is detected to a tenth of the budget."""
EPISODES = 1024
"""Fresh levels per split per evaluation."""


def plan_study(envs: list[str], rungs: list[str], out: Path, base: Args) -> list[Sweep]:
    """One sweep per (env, seed set): the rungs up to ``small`` with ``SEEDS_UP_TO_SMALL`` seeds, the
    larger ones with ``SEEDS_ABOVE``; each env capped and evaluated relative to its own budget."""
    small_index = rung_of("small").index
    sweeps = []
    for env in envs:
        budget = task_class(env).budget
        env_base = dataclasses.replace(base, total_steps=CAP_FACTOR * budget, eval_every=budget // EVALS_PER_BUDGET,
                                       eval_episodes=EPISODES, until_learned=True)
        parts = {"small": [r for r in rungs if rung_of(r).index <= small_index],
                 "large": [r for r in rungs if rung_of(r).index > small_index]}
        for part, part_rungs in parts.items():
            if part_rungs:
                seeds = list(range(SEEDS_UP_TO_SMALL if part == "small" else SEEDS_ABOVE))
                sweeps.append(Sweep(envs=[env], rungs=part_rungs, seeds=seeds, grid={}, base=env_base,
                                    out=out / env.split("/")[-1] / part))
    return sweeps


def run(out: Path, envs: list[str] | None = None, rungs: list[str] | None = None, base: Args | None = None,
        workers: int = 0, threads: int = 1, dry_run: bool = False, report_only: bool = False,
        progress: bool = True) -> str:
    """Print the estimate, train what is missing (resumable), then write the report; returns the
    report's text (the verdict tables). ``dry_run``: only the estimate; ``report_only``: only the
    report, from what has finished."""
    import os

    from capgap.eval import scaling

    envs = envs or list(TASKS)
    rungs = rungs or list(RUNGS)
    for r in rungs:
        rung_of(r)  # a bad rung is one line before anything is trained
    sweeps = plan_study(envs, rungs, out, base or Args())
    workers = workers or os.cpu_count() or 1
    est = estimate(sweeps, workers)
    print(describe_estimate(est, workers, "scaling"), flush=True)
    if dry_run:
        return ""
    t0 = time.time()
    if est["trials"] and not report_only:
        run_sweeps(sweeps, out, workers=workers, threads=threads, progress=progress)
    wall = time.time() - t0
    parts = sorted({p.parent for p in out.glob("*/*/sweep.json")} | {s.out for s in sweeps if s.out.exists()})
    text = scaling.write(out, parts)  # every part of the study run so far, not only this command's
    print(f"scaling: trained for {wall / 60:.1f} min this time; report in {out / 'scaling.md'}")
    return text
