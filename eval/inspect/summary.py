"""The in-training summary: cheap versions of the probe, A_ds and the forecast that the trainer logs at
every evaluation (``inspect/*`` TensorBoard tags, ``inspect.jsonl``), and ``capgap eval --inspect``
fills in afterwards."""

from __future__ import annotations

import math
from typing import Any

import torch

from capgap.agents import ActorCritic
from capgap.envs import PROXY
from capgap.eval.inspect.common import best_by, control_of, goal_plane, has_decision_squares, head_input
from capgap.eval.inspect.decision import decision_result
from capgap.eval.inspect.forecast import BASELINES, forecast_rows
from capgap.eval.inspect.probe import probe_data, probe_rows
from capgap.eval.inspect.record import layer_names


def training_summary(agent: ActorCritic, env_id: str, dials: dict[str, Any], seed: int = 0, fit: int = 512,
                     episodes: int = 256) -> dict[str, float]:
    """The cheap inspection the trainer runs at each evaluation (``Args.inspect``): flat numbers for
    ``inspect/<key>`` TensorBoard tags and ``inspect.jsonl``. Empty for envs without a
    ``Task.goal_plane`` (:func:`~capgap.eval.inspect.common.goal_plane`).

    The agent plays ``fit`` training-split levels (``FIT_DIALS``) and ``episodes`` test levels (the
    inspection levels, with its own seeded sampler: the training run's random streams are untouched);
    ``episodes`` other training-split levels are only observed. Keys:

    * ``A_ds``: decision-square alignment on the test episodes (where decision squares apply);
    * ``probe/<layer>``: the goal probe's accuracy on test episodes that end in proxy, per layer;
      ``probe/head`` the same at the layer the policy head reads (:func:`head_input`);
      ``probe/chance`` the majority-cell baseline on them (a floor); ``probe/best`` the layer (not
      ``obs``) with the best accuracy on the held-out training-split levels, scored on them (near
      the ceiling wherever an early convolution keeps the goal's position);
      ``probe/n_proxy`` how many episodes that is;
    * ``forecast/<layer>``: AUROC on the test episodes of the "ends in proxy" monitor fit on 80% of
      the fit episodes, per layer (``forecast/obs`` and ``forecast/pi`` are the level-only and
      behaviour-only baselines); ``forecast/best`` the internal layer best on the other 20%;
    * the untrained control (:func:`control_of`: the run's network before training, built with
      ``seed``), on the same episodes and labels: ``probe/control_head`` its goal probe at the head
      input on the agent's proxy-ending test episodes and ``probe/head_minus_control`` the agent's
      margin over it; ``forecast/control_best`` its best internal layer (chosen by the same rule) and
      ``forecast/best_minus_control`` the agent's margin over it (the forecast figure that is
      evidence; ``forecast/best`` alone is not: an untrained network scores about as high);
    * ``test_proxy``: the proxy rate on the inspection's test episodes.
    """
    if goal_plane(env_id) is None:
        return {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is fastest, and immune to an oversubscribed machine
    try:
        return _training_summary(agent, env_id, dials, seed, fit, episodes)
    finally:
        torch.set_num_threads(threads)


def _training_summary(agent: ActorCritic, env_id: str, dials: dict[str, Any], seed: int, fit: int,
                      episodes: int) -> dict[str, float]:
    names = layer_names(agent)
    data = probe_data(agent, env_id, dials, fit, episodes, seed, play_fit=True)
    tr, te = data.fit_played, data.test
    x = data.acts(agent, names)
    out: dict[str, float] = {"test_proxy": float((te.outcome == PROXY).mean())}
    if has_decision_squares(env_id):
        out["A_ds"] = decision_result(te).A_ds
    probes = probe_rows(x, data.labels, te.outcome, data.classes, names, seed=seed)
    out |= {f"probe/{r['layer']}": r["acc_test_proxy"] for r in probes}
    out["probe/head"] = out[f"probe/{head_input(names)}"]
    out["probe/best"] = best_by(probes, "acc_train", "acc_test_proxy", ("obs",))[1]
    out["probe/chance"] = probes[0]["chance_test_proxy"]
    out["probe/n_proxy"] = float(probes[0]["n_test_proxy"])
    fc = forecast_rows(x["fit"], tr.outcome == PROXY, x["test"], te.outcome == PROXY, ["obs", *names], 0.2, seed)
    out |= {f"forecast/{r['layer']}": r["auroc"] for r in fc}
    out["forecast/best"] = best_by(fc, "auroc_val", "auroc", BASELINES)[1]
    # the untrained control on the same probe data (its head probe only: cheap)
    control = control_of(agent, env_id, dials, seed)
    head = head_input(names)
    xc = data.acts(control, names)
    out["probe/control_head"] = probe_rows(xc, data.labels, te.outcome, data.classes, [head],
                                           seed=seed)[0]["acc_test_proxy"]
    out["probe/head_minus_control"] = out["probe/head"] - out["probe/control_head"]
    fc_control = forecast_rows(xc["fit"], tr.outcome == PROXY, xc["test"], te.outcome == PROXY,
                               [x for x in names if x not in BASELINES], 0.2, seed)
    out["forecast/control_best"] = best_by(fc_control, "auroc_val", "auroc", BASELINES)[1]
    out["forecast/best_minus_control"] = out["forecast/best"] - out["forecast/control_best"]
    return out


def inspection_record(summary: dict[str, float], step: int, meta: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One line of a run's ``inspect.jsonl``: the step, the run's meta (``capgap.eval.records.RUN_KEYS``),
    the seconds the inspection took and the summary (NaN as ``None``)."""
    return {"step": step, **meta, "seconds": seconds, **{k: (None if math.isnan(v) else v) for k, v in summary.items()}}
