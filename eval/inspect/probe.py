"""Goal probes: closed-form ridge regression from a layer's activations at an episode's first step to
the one-hot goal (or proxy) cell, or to the set of its cells, fit on training-split levels, scored on
held-out levels of both splits. The levels they read are one probe data set (:class:`ProbeData`),
gathered once per agent and shared by every network and every tool that reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from capgap.agents import ActorCritic
from capgap.envs import GOAL, PROXY
from capgap.eval.inspect.common import (
    FIT_DIALS,
    NETS,
    InspectError,
    across_runs,
    check_probe_env,
    has_decision_squares,
    levels,
    run_control,
    run_group,
    task_of,
)
from capgap.eval.inspect.decision import targets
from capgap.eval.inspect.play import Played, observe, play
from capgap.eval.inspect.record import first_acts, layer_names

RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Ridge strengths tried (times the number of fit samples), chosen on a 20% validation split of the fit set."""


@dataclass
class Probe:
    """A linear read-out of cells from standardised activations: the scores ``z @ W + b``, one per
    cell; the decoded cell is their argmax (or, for a set of k cells, their k largest)."""

    mean: torch.Tensor
    std: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor
    alpha: float

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std) @ self.W + self.b

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x).argmax(1)


def _ridge(z: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    n, d = z.shape
    if d <= n:
        return torch.linalg.solve(z.T @ z + lam * torch.eye(d, dtype=z.dtype), z.T @ y)
    return z.T @ torch.linalg.solve(z @ z.T + lam * torch.eye(n, dtype=z.dtype), y)  # the dual: d > n


def _targets_matrix(labels: np.ndarray, classes: int) -> torch.Tensor:
    """(N, classes) float64: one-hot rows for (N,) cell indices, the mask itself for (N, classes) masks."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return torch.as_tensor(labels.astype(np.float64))
    return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), classes).double()


def _hits(scores: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Per row, the fraction of its target cells found: for a cell index, argmax == it (1 or 0);
    for a mask of k cells, how many of them are among the k highest scores, over k."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return (scores.argmax(1).numpy() == labels).astype(float)
    k = labels.sum(1)
    top = torch.argsort(scores, dim=1, descending=True, stable=True).numpy()[:, : max(int(k.max()), 1)]
    found = np.take_along_axis(labels, top, 1) & (np.arange(top.shape[1])[None, :] < k[:, None])
    return found.sum(1) / np.maximum(k, 1)


def fit_probe(x: torch.Tensor, labels: np.ndarray, classes: int, seed: int = 0) -> Probe:
    """Closed-form multi-output ridge regression onto one-hot labels, or onto masks of several cells
    (a linear probe: no training loop, no learning rate, deterministic). Features are standardised on
    the fit set (constant features read as 0); the ridge strength is picked from ``RIDGE_ALPHAS`` on a
    held-out 20% of the fit set, then the probe is refit on all of it."""
    x = x.double()
    y = _targets_matrix(labels, classes)
    labels = np.asarray(labels)
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-6, std, torch.full_like(std, math.inf))
    z = (x - mean) / std
    n = len(z)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, tr = perm[: n // 5], perm[n // 5:]
    best, best_acc = RIDGE_ALPHAS[0], -1.0
    for alpha in RIDGE_ALPHAS:
        ym = y[tr].mean(0)
        w = _ridge(z[tr], y[tr] - ym, alpha * len(tr))
        acc = float(_hits(z[val] @ w + ym, labels[val.numpy()]).mean())
        if acc > best_acc:
            best, best_acc = alpha, acc
    ym = y.mean(0)
    return Probe(mean, std, _ridge(z, y - ym, best * n), ym, best)


def accuracy(probe: Probe, x: torch.Tensor, labels: np.ndarray) -> float:
    """The probe's accuracy: the fraction of episodes whose goal cell it names (cell labels), or, for
    masks of k cells (KeysChests' chests), the mean fraction of the k cells among its k best scores."""
    if len(labels) == 0:
        return math.nan
    return float(_hits(probe.scores(x), labels).mean())


def chance(fit_labels: np.ndarray, labels: np.ndarray) -> float:
    """The *majority-cell baseline*: the accuracy of always answering the fit set's most frequent cell
    (or its k most frequent cells, for masks). A floor, not chance: an untrained network of the same
    rung decodes far more than this from its first layers on, so the score a probe must beat to
    say anything about training is its control's (:func:`probe_run` with ``control``)."""
    if len(labels) == 0:
        return math.nan
    fit_labels = np.asarray(fit_labels)
    if fit_labels.ndim == 1:
        values, counts = np.unique(fit_labels, return_counts=True)
        return float((labels == values[counts.argmax()]).mean())
    freq = torch.as_tensor(fit_labels.sum(0), dtype=torch.float64)
    return float(_hits(freq.expand(len(labels), -1), labels).mean())


def probe_labels(env_id: str, first_obs: np.ndarray, dials: dict[str, Any]) -> dict[str, np.ndarray]:
    """What the ``goal`` and ``proxy`` probes decode on each level. Where decision squares apply
    (CheeseCorner, CheeseDish): (N,) cell indices (the goal's cell, the proxy cell nearest the start:
    :func:`~capgap.eval.inspect.decision.targets`). Elsewhere (KeysChests): (N, S*S) bool masks (the
    cells of the goal's plane, ``Task.goal_plane``: the chests; the keys' cells)."""
    check_probe_env(env_id)
    if has_decision_squares(env_id):
        tg = targets(env_id, first_obs, dials)
        return {"goal": tg.goal, "proxy": tg.proxy}
    task, n = task_of(env_id, dials), len(first_obs)
    return {"goal": first_obs[:, task.ch(task.goal_plane)].reshape(n, -1).astype(bool),
            "proxy": first_obs[:, task.ch("key")].reshape(n, -1).astype(bool)}


# ----- the probe data set: gathered once -------------------------------------------------------

PROBE_SETS = ("train", "test", "test_proxy", "test_goal")
"""Where probes are scored: held-out training-split levels, held-out test levels, and the test
episodes that end in proxy (the headline: does the agent know where the goal is while it runs to
the proxy?) or in goal."""


@dataclass
class ProbeData:
    """The levels a probe reads, gathered once for an agent: the first observations of ``fit``
    training-split levels (``FIT_DIALS``) to fit on, of as many other training-split levels
    (``train``) and of the agent's ``test`` episodes to score on, the labels on each, and the agent's
    test episodes themselves (their outcomes split the test set). A probe reads only the first step,
    so any network (the agent, its untrained control) is probed on the same data (:meth:`acts`)."""

    obs: dict[str, np.ndarray]
    """``fit``, ``train``, ``test`` -> (N, C, S, S) first observations."""
    labels: dict[str, dict[str, np.ndarray]]
    """Per set, :func:`probe_labels` (``goal``, ``proxy``)."""
    test: Played
    """The agent's episodes on the test levels."""
    fit_played: Played | None = None
    """The agent's episodes on the fit levels, where they were played (the forecast's labels)."""

    @property
    def classes(self) -> int:
        return self.obs["test"].shape[-1] ** 2

    def acts(self, net: nn.Module, layers: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """``[set][layer]``: the network's activations at the first step of every level (and ``obs``)."""
        return {k: first_acts(net, o, [x for x in layers if x != "obs"]) for k, o in self.obs.items()}


def probe_data(agent: ActorCritic, env_id: str, dials: dict[str, Any], fit: int, episodes: int, seed: int = 0,
               play_fit: bool = False) -> ProbeData:
    """The probe data set of ``agent``: it plays ``episodes`` test levels (and, with ``play_fit``, the
    ``fit`` levels too, for tools that need their outcomes); the ``episodes`` held-out training-split
    levels after the fit levels are only observed."""
    check_probe_env(env_id)
    fit_dials = {**dials, **FIT_DIALS}
    fit_played = play(agent, env_id, "train", levels(fit), fit_dials, seed) if play_fit else None
    test = play(agent, env_id, "test", levels(episodes), dials, seed)
    obs = {"fit": fit_played.first_obs if fit_played is not None else observe(env_id, "train", levels(fit), fit_dials),
           "train": observe(env_id, "train", levels(episodes, fit), fit_dials), "test": test.first_obs}
    labels = {k: probe_labels(env_id, o, fit_dials if k != "test" else dials) for k, o in obs.items()}
    return ProbeData(obs, labels, test, fit_played)


def probe_rows(x: dict[str, dict[str, torch.Tensor]], labels: dict[str, dict[str, np.ndarray]],
               test_outcome: np.ndarray, classes: int, layers: list[str], targets_: tuple[str, ...] = ("goal",),
               seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """Probes per (layer, target) from first-step activations already recorded.

    ``x[set][layer]`` and ``labels[set][target]`` for the sets ``fit``, ``train`` (held-out
    training-split levels) and ``test``; ``test_outcome`` splits the test episodes by outcome. One row
    per (layer, target): accuracy and the majority-cell baseline (``chance_*``, :func:`chance`) per
    ``PROBE_SETS`` entry, the episode counts."""
    masks = {"train": ("train", None), "test": ("test", None),
             "test_proxy": ("test", test_outcome == PROXY), "test_goal": ("test", test_outcome == GOAL)}
    rows: list[dict[str, Any]] = []
    from tqdm import tqdm

    for layer in tqdm(layers, desc="probes", unit="layer", disable=not progress, dynamic_ncols=True):
        for target in targets_:
            y = {k: v[target] for k, v in labels.items()}
            probe = fit_probe(x["fit"][layer], y["fit"], classes, seed)
            row: dict[str, Any] = {"layer": layer, "target": target, "dim": int(x["fit"][layer].shape[1]),
                                   "alpha": probe.alpha}
            for name, (src, mask) in masks.items():
                xs, ys = x[src][layer], y[src]
                if mask is not None:
                    xs, ys = xs[torch.as_tensor(mask)], ys[mask]
                row[f"acc_{name}"] = accuracy(probe, xs, ys)
                row[f"chance_{name}"] = chance(y["fit"], ys)
                row[f"n_{name}"] = len(ys)
            rows.append(row)
    return rows


def probe_nets(nets: dict[str, nn.Module], data: ProbeData, layers: list[str], targets_: tuple[str, ...] = ("goal",),
               seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """:func:`probe_rows` for each network of ``nets`` (name -> network) on the *same* probe data: the
    agent's first observations, labels and test outcomes. A probe reads only the first step, so a
    control needs no play of its own; scoring it on the agent's "ends in proxy" episodes makes trained
    and control accuracies two numbers about the same episodes. Rows carry ``net``."""
    rows: list[dict[str, Any]] = []
    for name, net in nets.items():
        rows += [{"net": name, **r} for r in probe_rows(data.acts(net, layers), data.labels, data.test.outcome,
                                                        data.classes, layers, targets_, seed, progress)]
    return rows


def probe_run(agent: ActorCritic, env_id: str, dials: dict[str, Any], fit: int = 2048, episodes: int = 512,
              seed: int = 0, layers: list[str] | None = None, progress: bool = False,
              control: ActorCritic | None = None) -> list[dict[str, Any]]:
    """Goal and proxy probes on every layer (and the observation itself, layer ``obs``) of ``agent``.

    Fit on ``fit`` training-split levels (with ``FIT_DIALS``) at the episodes' first step; scored on
    ``episodes`` other training-split levels and on ``episodes`` test-split levels, which the agent
    plays so that they can be split by outcome (:func:`probe_data`). One row per (layer, target), with
    accuracy and the majority-cell baseline (``chance_*``, :func:`chance`) per ``PROBE_SETS`` entry and
    the episode counts.

    With ``control`` (a network of the same layers, e.g. :func:`~capgap.eval.chance.untrained`), the
    same probes are fit and scored on the control's activations on the *same* levels, and its test
    episodes are split by the *agent's* outcomes (:func:`probe_nets`); every row then carries ``net``
    (``NETS``) and :func:`probe_pairs` lines the two up.
    """
    names = layers if layers is not None else layer_names(agent)
    data = probe_data(agent, env_id, dials, fit, episodes, seed)
    nets = {NETS[0]: agent, **({NETS[1]: control} if control is not None else {})}
    rows = probe_nets(nets, data, ["obs", *names], ("goal", "proxy"), seed, progress)
    return rows if control is not None else [{k: v for k, v in r.items() if k != "net"} for r in rows]


def probe_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Probe rows with a control (``net`` in ``NETS``) as one row per (target, layer): the trained
    network's keys as they are, and per ``PROBE_SETS`` entry the control's accuracy
    (``control_acc_<set>``) and the difference trained - control (``diff_<set>``), on the same episodes."""
    control = {(r["target"], r["layer"]): r for r in rows if r["net"] == NETS[1]}
    out = []
    for r in rows:
        if r["net"] != NETS[0]:
            continue
        c = control[(r["target"], r["layer"])]
        row = {k: v for k, v in r.items() if k != "net"}
        for name in PROBE_SETS:
            if c[f"n_{name}"] != r[f"n_{name}"]:
                raise InspectError(f"probe control scored on {c[f'n_{name}']} {name} episodes, the agent on "
                                   f"{r[f'n_{name}']}: they must be the same episodes")
            row[f"control_acc_{name}"] = c[f"acc_{name}"]
            row[f"diff_{name}"] = r[f"acc_{name}"] - c[f"acc_{name}"]
        out.append(row)
    return out


# ----- over runs: capgap inspect probe ------------------------------------------------------

def probes_of_run(run: Path, agent: ActorCritic, config: dict[str, Any], fit: int, episodes: int, seed: int = 0,
                  target: str = "goal", progress: bool = False) -> list[dict[str, Any]]:
    """One run's probes beside its untrained control (:func:`~capgap.eval.inspect.common.run_control`),
    as :func:`probe_pairs` rows of ``target`` (``goal``, ``proxy`` or ``both``), with the run and its group."""
    rows = probe_pairs(probe_run(agent, config["env"], config["dial_values"], fit, episodes, seed, progress=progress,
                                 control=run_control(config)))
    group = run_group(config)
    return [{"run": run.name, **group, **r} for r in rows if target in ("both", r["target"])]


def probe_summary(per_run: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (env, dials, rung, target, layer): accuracy, majority-cell baseline, control accuracy,
    difference and count on each ``PROBE_SETS`` entry, as mean and 95% CI over runs."""
    values = tuple(f"{k}_{s}" for s in PROBE_SETS for k in ("acc", "chance", "control_acc", "diff", "n"))
    return across_runs(per_run, ("env", "dials", "rung", "target", "layer"), values)
