"""Steering: a mean activation difference at a layer (goal present vs absent, or goal at a cell vs
elsewhere), added with a scale in every forward pass while the agent plays."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capgap.agents import ActorCritic
from capgap.envs import PROXY, make_core
from capgap.eval.inspect.common import FIT_DIALS, InspectError, across_runs, check_probe_env, levels, run_group, task_of
from capgap.eval.inspect.play import Played, observe, play
from capgap.eval.inspect.record import Recorder, layer_names, module


@contextmanager
def steer(agent: nn.Module, layer: str, vector: torch.Tensor, scale: float = 1.0) -> Iterator[None]:
    """Add ``scale * vector`` to ``layer``'s output in every forward pass inside the block
    (``vector`` flattened as :class:`~capgap.eval.inspect.record.Recorder` records it). A zero vector
    changes nothing."""
    mod = module(agent, layer)
    vec = vector.detach().float()

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output + scale * vec.view(1, *output.shape[1:])

    handle = mod.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def retarget_cell(env_id: str, dials: dict[str, Any]) -> int:
    """The default cell for a "goal at X" vector: the bottom-left interior cell, (S-2, 1), the cell
    farthest from CheeseCorner's top-right proxy. It is open on every level (in a maze every odd
    (row, column) is a cell; KeysChests is an open room)."""
    s = make_core(env_id, 1, **dials).size
    return (s - 2) * s + 1


@torch.no_grad()
def goal_vectors(agent: ActorCritic, env_id: str, dials: dict[str, Any], layers: list[str], cell: int | None = None,
                 fit: int = 2048) -> dict[str, torch.Tensor]:
    """:func:`goal_vector` at several layers at once (one forward pass per kind of observation)."""
    check_probe_env(env_id)
    obs = torch.as_tensor(observe(env_id, "train", levels(fit), {**dials, **FIT_DIALS}))
    task = task_of(env_id, dials)
    plane = task.ch(task.goal_plane)
    with Recorder(agent, layers) as rec:
        agent(obs)
        with_goal = dict(rec.last)
        if cell is None:
            bare = obs.clone()
            bare[:, plane] = 0
            agent(bare)
            return {layer: (with_goal[layer] - rec.last[layer]).mean(0) for layer in layers}
    at = obs[:, plane].reshape(fit, -1)[:, cell].bool()
    if not at.any() or at.all():
        raise InspectError(f"no fit level has its goal {'at' if not at.any() else 'elsewhere than'} cell {cell}; "
                           "pick another cell (an open cell outside the proxy) or more --fit levels")
    return {layer: with_goal[layer][at].mean(0) - with_goal[layer][~at].mean(0) for layer in layers}


def goal_vector(agent: ActorCritic, env_id: str, dials: dict[str, Any], layer: str, cell: int | None = None,
                fit: int = 2048, seed: int = 0) -> torch.Tensor:
    """A goal vector at ``layer`` from the first observations of ``fit`` training-split levels (``FIT_DIALS``).

    * ``cell=None`` (Mini, Turner et al.'s "cheese vector"): the mean over levels of the layer's
      activation with the goal minus without it (the goal's plane, ``Task.goal_plane``, cleared,
      nothing else changed). Adding it says "there is a goal"; subtracting it should make the agent
      ignore it.
    * ``cell=X``: the mean activation on levels with a goal at X minus the mean on the others
      ("the goal is at X"); adding it should send the agent toward X.

    ``seed`` is unused (the vector is a deterministic mean); it is kept for callers that pass one.
    """
    return goal_vectors(agent, env_id, dials, [layer], cell, fit)[layer]


def steering_effect(agent: ActorCritic, env_id: str, dials: dict[str, Any], layer: str, vector: torch.Tensor,
                    scales: tuple[float, ...] = (-1.0, 0.0, 1.0), episodes: int = 512, seed: int = 0,
                    cell: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Test-split A, proxy rate and C with ``scale * vector`` added at ``layer``, per scale (scale 0
    is the unsteered agent: the same levels and action samples). With ``cell``, also the fraction of
    episodes whose path passes through that cell (retargeting: does "goal at X" send it to X?).
    ``offset`` picks other test levels (:func:`~capgap.eval.inspect.common.levels`)."""
    rows = []
    for scale in scales:
        with steer(agent, layer, vector, scale):
            p = play(agent, env_id, "test", levels(episodes, offset), dials, seed)
        row = {"layer": layer, "scale": scale, "A": p.A, "proxy": float((p.outcome == PROXY).mean()),
               "C": float((p.outcome != 2).mean())}
        if cell is not None:
            row["visits_cell"] = float((p.paths == cell).any(1).mean())
        rows.append(row)
    return rows


def steering_study(agent: ActorCritic, env_id: str, dials: dict[str, Any], layers: list[str] | None = None,
                   scale: float = 1.0, cell: int | None = None, fit: int = 1024, episodes: int = 512,
                   select: int = 256, seed: int = 0) -> dict[str, Any]:
    """Steering per layer, and at the best layer, as one run's numbers for ``capgap inspect study``.

    Per layer (default: every layer but ``v``, which cannot move the agent), on ``episodes`` test
    levels: A unsteered, A with the goal-present vector added (``+scale``) and subtracted
    (``-scale``), and *retargeting*: the fraction of episodes that pass through ``cell`` (default
    :func:`retarget_cell`) unsteered and with the "goal at cell" vector added (``+scale``). The
    **best layer** is the internal layer (not ``pi``, whose vector is a change of logits, i.e. of
    behaviour) with the largest gain in A on ``select`` *other* test levels, so that its measured
    effect is not the maximum of noisy estimates. Returns ``{"layers": rows, "best": row, "cell": X}``.
    """
    check_probe_env(env_id)
    names = layers if layers is not None else [x for x in layer_names(agent) if x != "v"]
    cell = retarget_cell(env_id, dials) if cell is None else cell
    present = goal_vectors(agent, env_id, dials, names, None, fit)
    at_cell = goal_vectors(agent, env_id, dials, names, cell, fit)

    def run(vec: torch.Tensor | None, layer: str, k: float, n: int, offset: int) -> Played:
        if vec is None:
            return play(agent, env_id, "test", levels(n, offset), dials, seed)
        with steer(agent, layer, vec, k):
            return play(agent, env_id, "test", levels(n, offset), dials, seed)

    base, base_sel = run(None, "", 0, episodes, 0), run(None, "", 0, select, episodes)
    visits0 = float((base.paths == cell).any(1).mean())
    rows = []
    for layer in names:
        plus, minus = run(present[layer], layer, scale, episodes, 0), run(present[layer], layer, -scale, episodes, 0)
        moved = run(at_cell[layer], layer, scale, episodes, 0)
        sel = run(present[layer], layer, scale, select, episodes)
        visits = float((moved.paths == cell).any(1).mean())
        rows.append({"layer": layer, "A_0": base.A, "A_plus": plus.A, "A_minus": minus.A,
                     "dA_plus": plus.A - base.A, "dA_minus": minus.A - base.A,
                     "C_0": float((base.outcome != 2).mean()), "C_plus": float((plus.outcome != 2).mean()),
                     "visits_0": visits0, "visits_plus": visits, "d_visits": visits - visits0,
                     "dA_select": sel.A - base_sel.A, "norm": float(present[layer].norm())})
    internal = [r for r in rows if r["layer"] != "pi"] or rows
    best = max(internal, key=lambda r: r["dA_select"])
    return {"layers": rows, "best": best, "cell": cell, "scale": scale}


# ----- over runs: capgap inspect steer ------------------------------------------------------

def steering_of_run(run: Path, agent: ActorCritic, config: dict[str, Any], layer: str, cell: int | None,
                    scales: tuple[float, ...], fit: int, episodes: int, seed: int = 0) -> list[dict[str, Any]]:
    """One run's :func:`steering_effect` rows for its goal vector at ``layer`` (:func:`goal_vector`; with
    ``cell``, "goal at cell"), each with the run, its group and the vector's ``norm``."""
    env, d = config["env"], config["dial_values"]
    vec = goal_vector(agent, env, d, layer, cell, fit, seed)
    rows = steering_effect(agent, env, d, layer, vec, scales, episodes, seed, cell)
    return [{"run": run.name, **run_group(config), "norm": float(vec.norm()), **r} for r in rows]


def steering_summary(per_run: list[list[dict[str, Any]]], cell: bool = False) -> list[dict[str, Any]]:
    """A, proxy rate and C (and with ``cell`` the visits to it) per (env, dials, rung, layer, scale):
    mean and 95% CI over runs."""
    values = ("A", "proxy", "C", *(("visits_cell",) if cell else ()))
    return across_runs(per_run, ("env", "dials", "rung", "layer", "scale"), values)
