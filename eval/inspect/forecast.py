"""The forecast: per layer, a logistic monitor on the first step's activations that predicts "this
episode ends in proxy", fit on training-split episodes, scored by AUROC on test episodes, beside a
level-only (``obs``) and a behaviour-only (``pi``) baseline, and beside the untrained control."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from capgap.agents import ActorCritic
from capgap.envs import PROXY
from capgap.eval.inspect.common import (
    FIT_DIALS,
    NETS,
    InspectError,
    across_runs,
    best_by,
    excludes_zero,
    levels,
    run_control,
    run_group,
)
from capgap.eval.inspect.play import play
from capgap.eval.inspect.record import first_acts, layer_names

BASELINES = ("obs", "pi")
"""Forecast baselines, not internals: the level as observed, and the first action's logits."""


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (the probability that a random positive outranks a random negative,
    ties counting half); NaN without both classes."""
    score, label = np.asarray(score, dtype=float), np.asarray(label, dtype=bool)
    pos, neg = label.sum(), (~label).sum()
    if pos == 0 or neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    # average ranks over ties
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def fit_logistic(x: torch.Tensor, y: np.ndarray, l2: float = 1e-2,
                 steps: int = 200) -> Callable[[torch.Tensor], np.ndarray]:
    """A logistic monitor (a linear score + binary cross-entropy with an L2 penalty, L-BFGS from
    zero weights) on standardised features; returns the scoring function (higher = more likely a
    positive). Deterministic, and it draws nothing from torch's global random stream (the trainer
    calls it mid-run)."""
    x = x.double()
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-6, std, torch.full_like(std, math.inf))
    z = (x - mean) / std
    t = torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, t) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)

    def score(xs: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return (((xs.double() - mean) / std) @ w + b).numpy()
    return score


def forecast_rows(x_fit: dict[str, torch.Tensor], y_fit: np.ndarray, x_test: dict[str, torch.Tensor],
                  y_test: np.ndarray, layers: list[str], val_frac: float = 0.0, seed: int = 0,
                  progress: bool = False, refit: bool = False) -> list[dict[str, Any]]:
    """Per layer, a logistic monitor fit on ``x_fit[layer]`` to predict ``y_fit`` (ends in proxy),
    scored by AUROC on the test episodes. With ``val_frac`` > 0 the monitor is fit on the rest of the
    fit episodes and also scored on that held-out fraction (``auroc_val``: for choosing a layer
    without looking at the test episodes); with ``refit`` as well, the test AUROC is that of a second
    monitor fit on *all* the fit episodes (``auroc`` is then what ``val_frac=0`` gives). The split
    depends only on ``seed`` and the number of fit episodes: two networks scored on the same episodes
    share it."""
    n = len(y_fit)
    perm = np.random.default_rng(seed).permutation(n)
    val = perm[: int(n * val_frac)]
    tr = perm[int(n * val_frac):] if val_frac > 0 else np.arange(n)
    rows = []
    from tqdm import tqdm

    for layer in tqdm(layers, desc="forecast", unit="layer", disable=not progress, dynamic_ncols=True):
        row = {"layer": layer, "auroc": math.nan, "auroc_val": math.nan, "base_rate_fit": float(y_fit.mean()),
               "base_rate_test": float(y_test.mean()), "n_test": len(y_test)}
        if y_fit[tr].all() or not y_fit[tr].any():
            rows.append(row)
            continue
        score = fit_logistic(x_fit[layer][torch.as_tensor(tr)], y_fit[tr])
        if len(val):
            row["auroc_val"] = auroc(score(x_fit[layer][torch.as_tensor(val)]), y_fit[val])
            if refit:
                score = fit_logistic(x_fit[layer], y_fit)
        row["auroc"] = auroc(score(x_test[layer]), y_test)
        rows.append(row)
    return rows


def forecast_run(agent: ActorCritic, env_id: str, dials: dict[str, Any], fit: int = 2048, episodes: int = 512,
                 seed: int = 0, layers: list[str] | None = None, shuffle: bool = False,
                 progress: bool = False, val_frac: float = 0.0, control: ActorCritic | None = None,
                 refit: bool = False) -> list[dict[str, Any]]:
    """A GMG forecast from internals: per layer, a logistic monitor on the activations at an
    episode's first step, fit on ``fit`` training-split episodes (``FIT_DIALS``: goal and proxy
    apart, so both outcomes occur) to predict "this episode ends in proxy", scored by AUROC on
    ``episodes`` test episodes. Two baselines sit beside the layers: ``pi`` (the first action's
    logits) is the behaviour-only one, what the agent's first move tells; ``obs`` (the level as
    observed) is the level-only one, what the maze's layout alone tells. ``shuffle`` permutes the fit
    labels (a monitor that has learned nothing: AUROC ~0.5). ``val_frac``, ``refit``: see
    :func:`forecast_rows`.

    With ``control`` (the run's untrained network, :func:`~capgap.eval.chance.untrained`), the same
    monitors are fit on the control's activations on the *agent's* first observations, to predict the
    *agent's* outcomes, with the same fit/held-out split: rows then carry ``net`` (``"trained"`` or ``"random"``) and
    :func:`forecast_evidence` turns them into the figure that is evidence (best trained layer minus
    best control layer). Without a control a layer's AUROC says only how much of the level a feature
    map keeps: a random convolution keeps as much as the level itself.
    """
    fit_dials = {**dials, **FIT_DIALS}
    names = layers if layers is not None else layer_names(agent)
    tr = play(agent, env_id, "train", levels(fit), fit_dials, seed)
    te = play(agent, env_id, "test", levels(episodes), dials, seed)
    y_tr, y_te = tr.outcome == PROXY, te.outcome == PROXY
    if shuffle:
        y_tr = np.random.default_rng(seed).permutation(y_tr)
    nets = {NETS[0]: agent, **({NETS[1]: control} if control is not None else {})}
    rows = []
    for name, net in nets.items():
        rows += [{"net": name, **r} for r in forecast_rows(
            first_acts(net, tr.first_obs, names), y_tr, first_acts(net, te.first_obs, names), y_te,
            ["obs", *names], val_frac, seed, progress, refit)]
    return rows if control is not None else [{k: v for k, v in r.items() if k != "net"} for r in rows]


def forecast_evidence(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's forecast figures from :func:`forecast_run` rows with a control (``net`` keys, and
    ``auroc_val``: ``val_frac`` > 0). ``best`` is the agent's internal layer (not ``obs`` or ``pi``) best
    on the held-out fit episodes, scored on the test episodes; ``control_best`` the same for the
    control, chosen by the same rule. Keys: ``best_layer``, ``best``, ``control_best_layer``,
    ``control_best``, ``obs``, ``pi``, ``best_minus_control`` (the evidence: what the agent's internals
    forecast beyond what any random feature map of the level does), ``best_minus_pi`` and
    ``best_minus_obs`` (margins over the baselines; not evidence on their own: an untrained network
    beats both)."""
    trained = [r for r in rows if r.get("net", NETS[0]) == NETS[0]]
    control = [r for r in rows if r.get("net") == NETS[1]]
    if not control:
        raise InspectError("forecast evidence needs the control's rows; run the forecast with a control")
    by = {r["layer"]: r for r in trained}
    out: dict[str, Any] = {}
    out["best_layer"], out["best"] = best_by(trained, "auroc_val", "auroc", BASELINES)
    out["control_best_layer"], out["control_best"] = best_by(control, "auroc_val", "auroc", BASELINES)
    out["obs"], out["pi"] = by["obs"]["auroc"], by["pi"]["auroc"]
    out["best_minus_control"] = out["best"] - out["control_best"]
    out["best_minus_pi"] = out["best"] - out["pi"]
    out["best_minus_obs"] = out["best"] - out["obs"]
    return out


FORECAST_EVIDENCE = ("best", "control_best", "best_minus_control", "obs", "pi", "best_minus_pi", "best_minus_obs")
"""The per-run forecast figures (:func:`forecast_evidence`) summarised over runs."""


def forecast_summary(per_run: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From the rows of each run (:func:`forecast_of_run`: :func:`forecast_run` with a control, ``net``
    trained or random, per layer, with ``run``, ``env``, ``dials`` and ``rung``): per (env, dials, rung,
    layer) the trained and control AUROC (mean and 95% CI over runs), and per (env, dials, rung) the
    evidence figures of ``FORECAST_EVIDENCE`` with the chosen layers
    (``"trunk.3 (2/3)"``) and ``evidence``: +1 / -1 if the CI of best − control lies above / below 0,
    0 if it includes 0 (or there is one run)."""
    keys = ("env", "dials", "rung")
    paired, figures = [], []
    for rows in per_run:
        control = {r["layer"]: r for r in rows if r["net"] == NETS[1]}
        paired.append([{**{k: v for k, v in r.items() if k != "net"}, "control_auroc": control[r["layer"]]["auroc"]}
                       for r in rows if r["net"] == NETS[0]])
        figures.append({"run": rows[0]["run"], **{k: rows[0][k] for k in keys}, **forecast_evidence(rows)})
    layers = across_runs(paired, (*keys, "layer"), ("auroc", "control_auroc", "base_rate_test"))
    evidence = across_runs([[f] for f in figures], keys, FORECAST_EVIDENCE)
    for row in evidence:
        mine = [f for f in figures if all(f[k] == row[k] for k in keys)]
        for key in ("best_layer", "control_best_layer"):
            layer, n = Counter(f[key] for f in mine).most_common(1)[0]
            row[key] = f"{layer} ({n}/{len(mine)})"
        row["evidence"] = excludes_zero(row["best_minus_control_lo"], row["best_minus_control_hi"], row["runs"])
    return layers, evidence


def forecast_of_run(run: Path, agent: ActorCritic, config: dict[str, Any], fit: int, episodes: int, seed: int = 0,
                    shuffle: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """One run's forecast beside its untrained control (:func:`forecast_run` with ``val_frac=0.2`` and
    ``refit``), each row with the run and its group: what :func:`forecast_summary` reads."""
    rows = forecast_run(agent, config["env"], config["dial_values"], fit, episodes, seed, shuffle=shuffle,
                        progress=progress, val_frac=0.2, control=run_control(config), refit=True)
    return [{"run": run.name, **run_group(config), **r} for r in rows]
