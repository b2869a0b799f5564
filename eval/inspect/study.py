"""The study: every tool on every run of a sweep, each level set played once per run (``capgap inspect
study``), and its numbers over runs (seeds) per (env, dials, rung)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from capgap.agents import ActorCritic, rung
from capgap.envs import PROXY
from capgap.eval.inspect.common import (
    NETS,
    across_runs,
    excludes_zero,
    goal_plane,
    has_decision_squares,
    head_input,
    run_control,
    run_group,
)
from capgap.eval.inspect.decision import decision_result
from capgap.eval.inspect.forecast import forecast_evidence, forecast_rows
from capgap.eval.inspect.probe import probe_data, probe_pairs, probe_rows
from capgap.eval.inspect.record import layer_names
from capgap.eval.inspect.steering import retarget_cell, steering_study


def study_run(agent: ActorCritic, control: ActorCritic, env_id: str, dials: dict[str, Any], fit: int = 1024,
              episodes: int = 512, seed: int = 0, steering: dict[str, Any] | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Every tool on one run, each level set played once and its probe data set
    (:func:`~capgap.eval.inspect.probe.probe_data`) gathered once: A_ds; goal probes per layer for the
    agent and for ``control`` (the run's untrained network, :func:`~capgap.eval.chance.untrained`),
    both on the *agent's* episodes; the forecast per layer with the behaviour-only (``pi``) and
    level-only (``obs``) baselines, for the agent and for the control fit to predict the *agent's*
    outcomes from its activations on the agent's first observations, with the same split
    (``forecast_control``; :func:`~capgap.eval.inspect.forecast.forecast_evidence` compares the
    two); and :func:`~capgap.eval.inspect.steering.steering_study`
    (keyword arguments in ``steering``; ``None`` skips it).
    Returns ``{"decision", "test_proxy", "A", "probe", "forecast", "forecast_control", "steer"}``.
    """
    names = layer_names(agent)
    data = probe_data(agent, env_id, dials, fit, episodes, seed, play_fit=True)
    tr, te = data.fit_played, data.test
    nets = {NETS[0]: agent, NETS[1]: control}
    x = {name: data.acts(net, names) for name, net in nets.items()}  # read by the probes and the forecast
    probe = [{"net": name, **r} for name in nets for r in probe_rows(
        x[name], data.labels, te.outcome, data.classes, ["obs", *names], seed=seed, progress=progress)]
    forecast = {name: forecast_rows(x[name]["fit"], tr.outcome == PROXY, x[name]["test"], te.outcome == PROXY,
                                    ["obs", *names], 0.2, seed, progress) for name in nets}
    return {"decision": decision_result(te).row() if has_decision_squares(env_id) else None,
            "test_proxy": float((te.outcome == PROXY).mean()), "A": te.A,
            "probe": probe, "forecast": forecast[NETS[0]], "forecast_control": forecast[NETS[1]],
            "steer": steering_study(agent, env_id, dials, fit=fit, episodes=episodes, seed=seed, **steering)
            if steering is not None else None}


class Study:
    """The study of a sweep, one run at a time (:meth:`add`): each run's :func:`study_run` beside its
    untrained control, the layers of each (env, dials) panel, the envs skipped (no ``Task.goal_plane``).

    ``steering``: ``None`` skips steering; else ``scale``, ``select``, ``cell`` (None: each env's
    :func:`~capgap.eval.inspect.steering.retarget_cell`) and ``layer`` (``"best"``: chosen per run).
    """

    def __init__(self, fit: int, episodes: int, seed: int = 0, steering: dict[str, Any] | None = None,
                 progress: bool = False) -> None:
        self.fit, self.episodes, self.seed, self.progress = fit, episodes, seed, progress
        self.steering = steering
        self.results: list[dict[str, Any]] = []
        self.layers: dict[tuple[str, str], list[str]] = {}
        self.skipped: set[str] = set()
        self.steer: dict[str, Any] | None = None
        """The steering arguments of the last run studied (its cell and scale head the steering table)."""

    def add(self, run: Path, agent: ActorCritic, config: dict[str, Any]) -> None:
        """Study one run (its network and its config, as :func:`capgap.rundir.load_agent` returns them)."""
        env, d = config["env"], config["dial_values"]
        if goal_plane(env) is None:
            self.skipped.add(env)
            return
        steering = None
        if self.steering is not None:
            s = self.steering
            steering = {"scale": s["scale"], "cell": retarget_cell(env, d) if s.get("cell") is None else s["cell"],
                        "select": s["select"],
                        **({"layers": [s["layer"]]} if s.get("layer", "best") != "best" else {})}
            self.steer = steering
        result = study_run(agent, run_control(config), env, d, self.fit, self.episodes, self.seed, steering,
                           self.progress)
        group = run_group(config)
        self.layers.setdefault((group["env"], group["dials"]), ["obs", *layer_names(agent)])
        self.results.append({"run": run.name, **group, "rung_index": rung(config["rung"]).index,
                             "seed": config["seed"], **result})

    def summary(self) -> list[dict[str, Any]]:
        return study_summary(self.results)


def study_flat(result: dict[str, Any]) -> dict[str, Any]:
    """One run's study as flat numbers (and a few layer names), ready for ``across_runs``."""
    out: dict[str, Any] = {"A": result["A"], "test_proxy": result["test_proxy"]}
    if result["decision"] is not None:
        out |= {k: result["decision"][k] for k in ("A_ds", "A_branching", "excluded")}
    for net in NETS:
        rows = [r for r in result["probe"] if r["net"] == net and r["target"] == "goal"]
        out |= {f"probe_{net}/{r['layer']}": r["acc_test_proxy"] for r in rows}
        out["probe_chance"], out["probe_n_proxy"] = rows[0]["chance_test_proxy"], rows[0]["n_test_proxy"]
    for r in probe_pairs([r for r in result["probe"] if r["target"] == "goal"]):
        out[f"probe_diff/{r['layer']}"] = r["diff_test_proxy"]
    head = head_input([r["layer"] for r in result["forecast"]])
    out["probe_head_layer"] = head
    out["probe_head_trained"], out["probe_head_random"] = out[f"probe_trained/{head}"], out[f"probe_random/{head}"]
    out["probe_head_diff"] = out["probe_head_trained"] - out["probe_head_random"]
    fc = {r["layer"]: r for r in result["forecast"]}
    out |= {f"forecast/{k}": r["auroc"] for k, r in fc.items()}
    out |= {f"forecast_control/{r['layer']}": r["auroc"] for r in result["forecast_control"]}
    ev = forecast_evidence([{"net": NETS[0], **r} for r in result["forecast"]]
                           + [{"net": NETS[1], **r} for r in result["forecast_control"]])
    out["forecast_best_layer"], out["forecast_best"] = ev["best_layer"], ev["best"]
    out["forecast_control_best_layer"], out["forecast_control_best"] = ev["control_best_layer"], ev["control_best"]
    out["forecast_best_minus_control"] = ev["best_minus_control"]
    out["forecast_best_minus_pi"] = ev["best_minus_pi"]
    st = result["steer"]
    if st is not None:
        b = st["best"]
        out["steer_layer"] = b["layer"]
        out |= {f"steer_{k}": b[k] for k in ("A_0", "A_plus", "dA_plus", "dA_minus", "C_0", "C_plus", "visits_0",
                                             "visits_plus", "d_visits")}
        for r in st["layers"]:
            out[f"steer_dA/{r['layer']}"] = r["dA_plus"]
            out[f"steer_dA_minus/{r['layer']}"] = r["dA_minus"]
            out[f"steer_dvisits/{r['layer']}"] = r["d_visits"]
    return out


def study_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (env, dials, rung): every number of :func:`study_flat` as mean and 95% CI (Student-t) over the
    runs (seeds), and for the chosen layers how often each was chosen (``"trunk.3 (2/3)"``)."""
    flats = [{k: r[k] for k in ("env", "dials", "rung", "rung_index")} | study_flat(r) for r in results]
    names = {k for f in flats for k, v in f.items() if isinstance(v, (int, float)) and k != "rung_index"}
    rows = across_runs([[f] for f in flats], ("env", "dials", "rung", "rung_index"), tuple(sorted(names)))
    for row in rows:
        mine = [f for f in flats if (f["env"], f["dials"], f["rung"]) == (row["env"], row["dials"], row["rung"])]
        for key in ("probe_head_layer", "forecast_best_layer", "forecast_control_best_layer", "steer_layer"):
            chosen = Counter(f[key] for f in mine if key in f)
            if chosen:
                layer, n = chosen.most_common(1)[0]
                row[key] = f"{layer} ({n}/{len(mine)})"
        for key in ("probe_head_diff", "forecast_best_minus_control"):
            row[f"{key}_evidence"] = excludes_zero(row[f"{key}_lo"], row[f"{key}_hi"], row["runs"])
    return sorted(rows, key=lambda r: (r["env"], r["dials"], r["rung_index"], r["rung"]))
