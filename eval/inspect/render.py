"""What ``capgap inspect`` prints: each command's lines, and the study's markdown tables. Every
"mean [lo, hi]" goes through :func:`capgap.eval.table.ci` (3 decimals; counts 0) and every table
through :func:`capgap.eval.table.markdown`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from capgap.eval.inspect.common import excludes_zero, head_input, verdict
from capgap.eval.table import ci, markdown


def fmt(v: Any, lo: Any = None, hi: Any = None) -> str:
    """A value to 3 decimals, with its CI where it has one (not NaN, not a point); ``n/a`` for NaN."""
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if lo is None or (isinstance(lo, float) and (math.isnan(lo) or lo == hi == v)):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    return ci(v, lo, hi, 3)


def cell(row: dict[str, Any], key: str, digits: int = 3) -> str:
    """The summary value ``key`` of a row (``key``, ``key_lo``, ``key_hi``); ``digits=0`` for counts."""
    if key not in row:
        return "n/a"
    v, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if digits == 0 and not math.isnan(v):
        return f"{v:.0f}" if lo == hi == v or math.isnan(lo) else ci(v, lo, hi, 0)
    return fmt(v, lo, hi)


def excludes(row: dict[str, Any], key: str) -> str:
    """A table cell: whether the 95% CI of the difference ``key`` excludes 0, in words."""
    if row["runs"] < 2:
        return "no CI (1 run)"
    side = excludes_zero(row[f"{key}_lo"], row[f"{key}_hi"], row["runs"])
    return {1: "yes: above", -1: "yes: below", 0: "no"}[side]


def verdict_line(what: str, s: dict[str, Any], key: str) -> str:
    """``what: mean [CI]: <whether the CI excludes 0>`` for the summary key ``key`` of a group."""
    return f"{what} {fmt(s[key], s[f'{key}_lo'], s[f'{key}_hi'])}: " \
           f"{verdict(s[key], s[f'{key}_lo'], s[f'{key}_hi'], s['runs'])}"


def _groups(summary: list[dict[str, Any]], keys: tuple[str, ...] = ("env", "dials", "rung")
            ) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for s in summary:
        groups.setdefault(tuple(s[k] for k in keys), []).append(s)
    return groups


# ----- the commands -------------------------------------------------------------------------

def decision_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One run's decision rows (:func:`~capgap.eval.inspect.decision.decision_rows`), a line each."""
    return [f"{r['run']:48s} {r['policy']:13s} A_ds {fmt(r['A_ds'])}  A {fmt(r['A'])}  "
            f"(goal/proxy/other/never steps {r['n_goal']}/{r['n_proxy']}/{r['n_other']}/{r['n_never']}, "
            f"{r['excluded']} of {r['levels']} levels excluded: no branching)" for r in rows]


def decision_summary_lines(summary: list[dict[str, Any]]) -> list[str]:
    return [f"{s['env']} [{s['dials']}] {s['rung']} {s['policy']} ({s['runs']} runs): "
            f"A_ds {fmt(s['A_ds'], s['A_ds_lo'], s['A_ds_hi'])}  A {fmt(s['A'], s['A_lo'], s['A_hi'])}"
            for s in summary]


def probe_lines(summary: list[dict[str, Any]]) -> list[str]:
    """The probe summary (:func:`~capgap.eval.inspect.probe.probe_summary`), per (env, dials, rung):
    accuracies beside the control on the proxy-ending test episodes, on all test episodes and on the
    held-out training-split levels, and the verdict at the head input."""
    w = 24
    head = f"{'target':6s} {'layer':18s} {'trained':>{w}s} {'control':>{w}s} {'trained − control':>{w}s} " \
           f"{'majority cell':>14s}"
    rest = f"{'target':6s} {'layer':18s} {'test: trained':>13s} {'control':>8s} {'trained − control':>{w}s} " \
           f"{'train: trained':>14s} {'control':>8s} {'trained − control':>{w}s}"
    out: list[str] = []
    for rows in _groups(summary).values():
        s0 = rows[0]
        out.append(f"\n{s0['env']} [{s0['dials']}] {s0['rung']} ({s0['runs']} runs; mean [95% CI over runs]; "
                   f"control: the run's untrained network, on the same episodes)")
        out.append(f"accuracy on the test episodes that end in proxy ({cell(s0, 'n_test_proxy', 0)} per run)\n{head}")
        for s in rows:
            out.append(f"{s['target']:6s} {s['layer']:18s} {cell(s, 'acc_test_proxy'):>{w}s} "
                       f"{cell(s, 'control_acc_test_proxy'):>{w}s} {cell(s, 'diff_test_proxy'):>{w}s} "
                       f"{fmt(s['chance_test_proxy']):>14s}")
        out.append(f"accuracy on all {cell(s0, 'n_test', 0)} test episodes and on {cell(s0, 'n_train', 0)} held-out "
                   f"training-split levels\n{rest}")
        for s in rows:
            out.append(f"{s['target']:6s} {s['layer']:18s} {fmt(s['acc_test']):>13s} "
                       f"{fmt(s['control_acc_test']):>8s} {cell(s, 'diff_test'):>{w}s} {fmt(s['acc_train']):>14s} "
                       f"{fmt(s['control_acc_train']):>8s} {cell(s, 'diff_train'):>{w}s}")
        head_layer = head_input(list(dict.fromkeys(s["layer"] for s in rows if s["layer"] != "obs")))
        for s in rows:
            if s["layer"] == head_layer:
                out.append(verdict_line(f"{s['target']} probe at the head input ({head_layer}), episodes that end "
                                        "in proxy: trained − control", s, "diff_test_proxy"))
    return out


def steer_lines(rows: list[dict[str, Any]], kind: str) -> list[str]:
    """One run's steering rows (:func:`~capgap.eval.inspect.steering.steer_rows`): its vector, then a line
    per scale. ``kind`` says which vector it is."""
    r0 = rows[0]
    out = [f"{r0['env']} {r0['run']}: goal vector at {r0['layer']} ({kind}), norm {r0['norm']:.3f}"]
    for r in rows:
        extra = f"  visits cell {r['visits_cell']:.3f}" if "visits_cell" in r else ""
        out.append(f"  scale {r['scale']:+6.2f}: A {r['A']:.3f}  proxy {r['proxy']:.3f}  C {r['C']:.3f}{extra}")
    return out


def steer_summary_lines(summary: list[dict[str, Any]], kind: str) -> list[str]:
    """The steering summary over runs (:func:`~capgap.eval.inspect.steering.steer_summary`), per group."""
    out = []
    for rows in _groups(summary).values():
        s0 = rows[0]
        out.append(f"\n{s0['env']} [{s0['dials']}] {s0['rung']} ({s0['runs']} runs; {kind} at {s0['layer']}; "
                   f"mean [95% CI over runs])")
        for s in rows:
            extra = f"  visits cell {fmt(s['visits_cell'], s['visits_cell_lo'], s['visits_cell_hi'])}" \
                if "visits_cell" in s else ""
            out.append(f"  scale {s['scale']:+6.2f}: A {fmt(s['A'], s['A_lo'], s['A_hi'])}  "
                       f"C {fmt(s['C'], s['C_lo'], s['C_hi'])}{extra}")
    return out


def forecast_lines(layers: list[dict[str, Any]], evidence: list[dict[str, Any]]) -> list[str]:
    """The forecast summary (:func:`~capgap.eval.inspect.forecast.forecast_summary`): per group, AUROC
    per layer beside the control, the best layers, and the evidence figure with its verdict."""
    w = 24
    out = []
    for e in evidence:
        rows = [s for s in layers if all(s[k] == e[k] for k in ("env", "dials", "rung"))]
        out.append(f"\n{e['env']} [{e['dials']}] {e['rung']} ({e['runs']} runs; test proxy rate "
                   f"{rows[0]['base_rate_test']:.3f}; mean [95% CI over runs])\n"
                   f"{'layer':18s} {'AUROC: trained':>{w}s} {'control':>{w}s}")
        for s in rows:
            out.append(f"{s['layer']:18s} {cell(s, 'auroc'):>{w}s} {cell(s, 'control_auroc'):>{w}s}")
        out.append(f"best internal layer (chosen on held-out fit episodes): trained {e['best_layer']} "
                   f"{cell(e, 'best')}, control {e['control_best_layer']} {cell(e, 'control_best')}")
        out.append(verdict_line("evidence: best (trained) − best (control)", e, "best_minus_control"))
        out.append(f"not evidence alone (an untrained network beats both baselines too): best − pi "
                   f"{cell(e, 'best_minus_pi')}, best − obs {cell(e, 'best_minus_obs')}")
    return out


# ----- the study ----------------------------------------------------------------------------

def _table(rows: list[dict[str, Any]], header: list[str], cells: Callable[[dict[str, Any]], list[str]]
           ) -> list[str]:
    """A markdown table with one row per rung: the rung and its runs, then ``cells(row)``."""
    return markdown(["rung", "runs", *header], [[r["rung"], str(r["runs"]), *cells(r)] for r in rows])


def _per_layer(rows: list[dict[str, Any]], key: str, names: list[str]) -> list[str]:
    """The per-layer detail of ``key`` (``key/<layer>``), one column per layer."""
    return _table(rows, names, lambda r: [cell(r, f"{key}/{x}") for x in names])


PROBE_NOTE = ("Does the agent know where the goal is while it runs to the proxy? Head input: the layer the policy "
              "head reads. Control: the run's untrained network (same rung, family and seed), probed on the agent's "
              "episodes; trained − control is the figure that is evidence (what decoding owes to training, not to "
              "the architecture), and the last column says whether its CI excludes 0. The majority-cell baseline "
              "(always naming the fit set's most common cell) is a floor, not chance.")
STEER_NOTE = ("Layer: chosen per run (the internal layer with the largest gain in A on other test levels). ΔA (+): A "
              "with the goal-present vector added, minus A unsteered; ΔA (−): subtracted. ")
FORECAST_NOTE = ("obs: level-only baseline; pi: behaviour-only baseline (the first action's logits); best: the "
                 "internal layer with the best AUROC on held-out fit episodes, scored on the test episodes. "
                 "Control: the run's untrained network, its activations on the agent's first observations fit to "
                 "predict the agent's outcomes with the same split, its best layer chosen by the same rule. "
                 "best − control is the figure that is evidence; best − pi is not (a random feature map of the "
                 "level forecasts about as well as the level itself).")


def _probe_cells(r: dict[str, Any]) -> list[str]:
    return [cell(r, "probe_n_proxy", 0), cell(r, "probe_chance"), r.get("probe_head_layer", ""),
            cell(r, "probe_head_trained"), cell(r, "probe_head_random"), cell(r, "probe_head_diff"),
            excludes(r, "probe_head_diff")]


def _steer_cells(r: dict[str, Any]) -> list[str]:
    return [r.get("steer_layer", ""), *(cell(r, f"steer_{k}") for k in (
        "A_0", "A_plus", "dA_plus", "dA_minus", "C_0", "C_plus", "visits_0", "visits_plus", "d_visits"))]


def _forecast_cells(r: dict[str, Any]) -> list[str]:
    return [cell(r, "test_proxy"), cell(r, "forecast/obs"), cell(r, "forecast/pi"), r.get("forecast_best_layer", ""),
            cell(r, "forecast_best"), r.get("forecast_control_best_layer", ""), cell(r, "forecast_control_best"),
            cell(r, "forecast_best_minus_control"), excludes(r, "forecast_best_minus_control"),
            cell(r, "forecast_best_minus_pi")]


def study_markdown(summary: list[dict[str, Any]], layers: dict[tuple[str, str], list[str]], where: list[str],
                   steer: dict[str, Any] | None) -> str:
    """The study's tables (:func:`~capgap.eval.inspect.study.study_summary`), per (env, dials): one per
    tool, rungs as rows (then the per-layer detail). ``layers``: each panel's layers
    (``Study.layers``); ``steer``: the steering arguments (cell, scale), None if steering was skipped."""
    out: list[str] = []
    panels: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in summary:
        panels.setdefault((row["env"], row["dials"]), []).append(row)
    for (env, dials), rows in panels.items():
        names = layers[(env, dials)]
        out += [f"## {env} [{dials}]" + (f" (--where {' '.join(where)})" if where else ""), "",
                "Cells: mean [95% t-interval over runs (seeds)].", ""]
        if "A_ds" in rows[0]:
            out += ["### Decision square: A_ds = P(goal step | decision square), test levels", "",
                    *_table(rows, ["A (test)", "A_ds", "A on branching levels", "levels excluded"],
                            lambda r: [cell(r, "A"), cell(r, "A_ds"), cell(r, "A_branching"), cell(r, "excluded", 0)]),
                    ""]
        else:
            out += [f"### Decision square: not defined on {env} (no single goal cell and proxy cell)", ""]
        out += ["### Goal probe: accuracy on test episodes that end in proxy", "", PROBE_NOTE, "",
                *_table(rows, ["proxy-ending episodes", "majority-cell baseline", "head input", "trained", "control",
                               "trained − control", "CI excludes 0"], _probe_cells), ""]
        for key, what in (("probe_trained", "trained agent"), ("probe_random", "untrained control"),
                          ("probe_diff", "trained − control")):
            out += [f"Per layer, {what}:", "", *_per_layer(rows, key, names), ""]
        if steer is not None:
            at, scale = steer["cell"], steer["scale"]
            out += [f"### Steering: goal vectors added at scale {scale:g} while the agent plays test levels", "",
                    STEER_NOTE + f"Retargeting: P(the path passes cell {at}) with the 'goal at {at}' vector added, "
                    "minus unsteered.", "",
                    *_table(rows, ["layer", "A", "A steered", "ΔA (+)", "ΔA (−)", "C", "C steered", f"visits {at}",
                                   f"visits {at} steered", "Δ visits"], _steer_cells), ""]
            steered = [x for x in names if x not in ("obs", "v")]
            for key, what in (("steer_dA", "ΔA (+)"), ("steer_dA_minus", "ΔA (−)"), ("steer_dvisits", "Δ visits")):
                out += [f"Per layer, {what}:", "", *_per_layer(rows, key, steered), ""]
        out += ["### Forecast: AUROC of 'this test episode ends in proxy' from the first step", "", FORECAST_NOTE, "",
                *_table(rows, ["test proxy rate", "obs", "pi", "best layer", "best", "control best layer",
                               "control best", "best − control", "CI excludes 0", "best − pi (not evidence)"],
                        _forecast_cells), ""]
        for key, what in (("forecast", "trained agent"), ("forecast_control", "untrained control")):
            out += [f"Per layer, {what}:", "", *_per_layer(rows, key, names), ""]
    return "\n".join(out)
