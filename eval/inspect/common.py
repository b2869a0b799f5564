"""What every inspection tool shares: its error, the inspection levels, which envs a tool applies to
(read off the task classes), the untrained control, and the statistics over runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from capgap.agents import LADDER, ActorCritic
from capgap.envs import TASKS, DialError, InspectError, task_class
from capgap.eval.chance import untrained

LEVEL_BASE = 1 << 41
"""Inspection levels are ``LEVEL_BASE + i``: far from any fixed training set ``[0, num_levels)``
(fresh training levels are hashed over [0, 2^62), so a collision has probability ~n / 2^62)."""
FIT_DIALS = {"p_disambiguate": 1.0}
"""Dials for the probes' training-split levels: with the run's own ``p_disambiguate=0`` the goal
sits on the proxy in every training level (CheeseCorner: always the same cell), so there is
nothing to learn to decode; with 1 the training split's levels pull goal and proxy apart, as the
test split does, while staying training-split levels (other level keys than the test split's)."""
NETS = ("trained", "random")
"""The ``net`` of a probe or forecast row with a control: the agent, and its random-init control (:func:`untrained`)."""


Policy = Callable[[torch.Tensor], Any]
"""Anything mapping a (B, C, S, S) uint8 observation to (B, 4) logits, or to (logits, value)."""


# ----- which envs a tool applies to: the task class says (``Task.goal_plane``, ``Task.goal_cells``)

def goal_plane(env_id: str) -> str | None:
    """The observation plane that shows the goal on ``env_id`` (``Task.goal_plane``): goal probes,
    goal vectors, the study and the in-training summary apply where it is not None (and not to an
    unregistered env)."""
    try:
        return task_class(env_id).goal_plane
    except DialError:
        return None


def has_decision_squares(env_id: str) -> bool:
    """Whether decision squares apply on ``env_id``: one goal cell and a proxy made of cells
    (``Task.goal_cells``), the goal shown on ``Task.goal_plane``."""
    try:
        cls = task_class(env_id)
    except DialError:
        return False
    return cls.goal_cells and cls.goal_plane is not None


def probe_envs() -> tuple[str, ...]:
    """The registered envs (``capgap.envs.TASKS``) where probes, steering and the study apply."""
    return tuple(env for env in TASKS if goal_plane(env) is not None)


def decision_envs() -> tuple[str, ...]:
    """The registered envs where decision squares apply."""
    return tuple(env for env in TASKS if has_decision_squares(env))


def check_decision_env(env_id: str) -> None:
    if not has_decision_squares(env_id):
        raise InspectError(f"{env_id} has no single goal cell and proxy cells to inspect; "
                           f"supported: {', '.join(decision_envs())}")


def check_probe_env(env_id: str) -> None:
    if goal_plane(env_id) is None:
        raise InspectError(f"{env_id} has no goal cells to probe or steer toward; "
                           f"supported: {', '.join(probe_envs())}")


def task_of(env_id: str, dials: dict[str, Any]) -> Any:
    """The task of ``env_id`` with ``dials``."""
    return task_class(env_id).from_dials(**dials)


# ----- levels and the control ---------------------------------------------------------------

def levels(n: int, offset: int = 0) -> np.ndarray:
    """The inspection levels ``offset .. offset + n - 1`` (indices ``LEVEL_BASE + i``): pass disjoint
    ranges for a fit set and a held-out set."""
    return LEVEL_BASE + offset + np.arange(n, dtype=np.int64)


def control_of(agent: ActorCritic, env_id: str, dials: dict[str, Any], seed: int) -> ActorCritic:
    """The untrained control (:func:`capgap.eval.chance.untrained`: the network ``capgap train`` starts
    from, built without touching the global random stream) of the rung and family of ``agent`` (the
    rung found by its width ``m``)."""
    rungs = [name for name, m in LADDER if m == agent.m]
    if not rungs:
        raise InspectError(f"no rung has width m={agent.m}; rungs: {', '.join(n for n, _ in LADDER)}")
    return untrained(env_id, dials, rungs[0], agent.family, seed)


def run_control(config: dict[str, Any]) -> ActorCritic:
    """The random-init control of a run (its config as :func:`capgap.rundir.load_agent` returns it): a
    network of the same rung and family, initialised as ``capgap train`` initialises it
    (``torch.manual_seed(seed)`` then ``build``): for a run trained from scratch, exactly its own
    network before training."""
    return untrained(config["env"], config["dial_values"], config["rung"], config["family"], config["seed"])


# ----- choosing a layer, and statistics over runs ---------------------------------------------

def head_input(layers: list[str]) -> str:
    """The layer the policy head reads (the one before ``pi``): what the agent's actions can use."""
    return layers[layers.index("pi") - 1] if "pi" in layers and layers.index("pi") > 0 else layers[-1]


def best_by(rows: list[dict[str, Any]], select: str, report: str, skip: tuple[str, ...]) -> tuple[str, float]:
    """(layer, ``report`` value) of the row with the highest ``select`` value among layers not in
    ``skip``: a layer chosen on held-out data other than the data it is reported on."""
    cand = [r for r in rows if r["layer"] not in skip and not math.isnan(r[select])]
    if not cand:
        return "", math.nan
    r = max(cand, key=lambda r: r[select])
    return r["layer"], r[report]


def across_runs(per_run: list[list[dict[str, Any]]], keys: tuple[str, ...],
                values: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of several runs (seeds) grouped by ``keys``: each of ``values`` as its mean and 95%
    CI over runs (``capgap.eval.metrics.mean_ci``, Student-t, cut at what ``v`` can take), as ``v``,
    ``v_lo``, ``v_hi``."""
    from capgap.eval.metrics import mean_ci  # scipy: imported when needed, not by the trainer

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rows in per_run:
        for r in rows:
            groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(keys, key, strict=True)) | {"runs": len(rs)}
        for v in values:
            row[v], row[f"{v}_lo"], row[f"{v}_hi"] = mean_ci([float(r[v]) for r in rs if v in r], metric=v)
        out.append(row)
    return out


def excludes_zero(lo: float, hi: float, runs: int) -> int:
    """+1 if a 95% CI over ``runs`` runs lies above 0, -1 if below, 0 if it contains 0 or is no
    interval (NaN, or one run: :func:`capgap.eval.metrics.mean_ci` then gives lo = hi = NaN)."""
    if runs < 2 or math.isnan(lo) or math.isnan(hi):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def verdict(mean: float, lo: float, hi: float, runs: int) -> str:
    """A difference (trained - control) and its 95% CI over runs, in words: whether the CI excludes 0."""
    if math.isnan(mean):
        return "n/a (no value)"
    if runs < 2:
        return "no CI from 1 run: not evidence yet (run more seeds)"
    side = excludes_zero(lo, hi, runs)
    if side == 0:
        return "CI includes 0: no evidence of a difference from the untrained control"
    return f"CI excludes 0: {'above' if side > 0 else 'below'} the untrained control"


def run_group(config: dict[str, Any]) -> dict[str, Any]:
    """What groups a run with its other seeds in a table: its env, dials and rung (with the family
    where it is not ``conv``)."""
    from capgap.agents import rung

    return {"env": config["env"], "dials": ",".join(sorted(config["dials"])),
            "rung": rung(config["rung"]).name + ("" if config["family"] == "conv" else f"-{config['family']}")}
