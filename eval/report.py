"""Turn sweep metrics into a report: markdown tables, CSV/JSON, plots and a TensorBoard log.

Input: the rows of ``capgap.eval.metrics.compute`` (one per env, dials, rung and step).
``write_report`` writes into one folder:

- ``report.md``: per (env, dials) a table of the final rows (every seed at its own final evaluation,
  ``metrics.compute_final``), each cell "mean [lo, hi]";
- ``report.csv``, ``report.json``: every row (every step), keys as in ``metrics.ROW_KEYS``
  (NaN is ``nan`` in the CSV and ``null`` in the JSON);
- ``ca_vs_params.png`` (C_test and A_test against parameter count), ``curves.png``
  (C_test(t) solid and A_test(t) dashed, one colour per rung) and ``gap_vs_size.png``
  (gap_test against parameter count, one line per env and dials);
- ``tensorboard/``: the plots as images and the report as text at the top level, and one run
  per (env, dials, rung) holding an HParams entry, the final ``final/{C,A,gap}_test`` scalars
  and the curves ``sweep/{C,A,gap}_test`` against env steps. Open it with
  ``tensorboard --logdir <out_dir>/tensorboard``.

With inspection rows (``capgap.eval.metrics.compute_inspections``, from the runs' ``inspect.jsonl``),
also: a section of ``report.md`` per (env, dials) with the final-step ``INSPECT_METRICS`` per rung,
``inspect.csv``/``inspect.json`` (every row, every step), ``inspect_curves.png`` (the goal probe at
the policy head's input and the forecast's AUROC against env steps, one colour per rung) and the
curves ``sweep/inspect/<name>`` in each TensorBoard run.

Plots are drawn on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, so
pyplot's global state and backend are never touched.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from capgap.eval.figures import DPI, grid, log_x, rgb
from capgap.eval.metrics import BASELINE_METRICS, CALIBRATED_METRICS, LEARNED, ROW_KEYS, final_rows
from capgap.eval.table import ci
from capgap.eval.table import markdown as table

TABLE_METRICS: tuple[str, ...] = (
    *CALIBRATED_METRICS, "C_test", "A_test", "gap_test", "C_train", "A_train", "transfer", "retention", "proxy_test",
)
"""The metric columns of the markdown table, after rung, params, step and seeds: the scores calibrated
against chance first (``capgap.eval.chance``), then the raw ones; the chance baselines follow."""
TEXT_METRICS: tuple[str, ...] = ("A_train", "C_test", "A_test", "gap_test", *CALIBRATED_METRICS)
"""The metric columns of ``table_text`` and the metrics logged per run to TensorBoard."""
NOT_LEARNED = "not learned"
"""The flag of a row whose train-split A is below ``metrics.LEARNED``: its test gap means little."""
PLOTS: tuple[str, ...] = ("ca_vs_params", "curves", "gap_vs_size")
INSPECT_METRICS: tuple[str, ...] = (
    "A_ds", "probe/head", "probe/control_head", "probe/head_minus_control", "forecast/best", "forecast/control_best",
    "forecast/best_minus_control", "forecast/pi", "forecast/obs",
)
"""The inspection columns of the report's tables (``inspect/*`` in training; docs/inspect.md): A_ds,
the goal probe on proxy-ending test episodes at the policy head's input beside the run's untrained
network on the same episodes and their difference (the evidence), the forecast's AUROC at its best
internal layer beside the untrained network's best and their difference (the evidence), and its
behaviour-only and level-only baselines."""


def fmt_ci(row: dict[str, Any], metric: str) -> str:
    """``"0.83 [0.79, 0.87]"``: the metric's mean and 95% CI over seeds to two decimals; with one
    seed there is no CI and the cell says so (``"0.83 (1 seed)"``); ``"n/a"`` when the mean is NaN."""
    return ci(row[metric], row[metric + "_lo"], row[metric + "_hi"], n=row.get("n_seeds"))


def fmt_baseline(row: dict[str, Any], policy: str) -> str:
    """``"0.18 / 0.35 / 0.17 / 0.21"``: a chance baseline's train A / test C / test A / test proxy
    (``policy`` is ``random`` or ``untrained``; the untrained networks' mean over init seeds)."""
    values = [row.get(f"{policy}_{m}", math.nan) for m in BASELINE_METRICS]
    return " / ".join("n/a" if v is None or math.isnan(v) else f"{v:.2f}" for v in values)


def learned_flag(row: dict[str, Any]) -> str:
    """``NOT_LEARNED`` when the agent has not learned the training task (A_train < LEARNED), else ``""``."""
    a = row["A_train"]
    return NOT_LEARNED if a is None or math.isnan(a) or a < LEARNED else ""


def _panels(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows grouped by (env, dials and setting), in sorted order; the dials of a row with a setting
    (``capgap.eval.records.format_setting``) read ``"dials; setting"``."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["env"], "; ".join(x for x in (r["dials"], r["setting"]) if x))].append(r)
    return dict(sorted(out.items()))


def _panel_title(env: str, dials: str) -> str:
    import textwrap

    return f"{env}\n" + "\n".join(textwrap.wrap(dials, 60) or ["(default dials)"])


def _final(rows: list[dict[str, Any]], final: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The final rows: ``final`` as given (``metrics.compute_final``: every seed where it stopped), else
    the row at each group's largest step."""
    return final_rows(final if final is not None else rows)


def _step_cell(row: dict[str, Any]) -> str:
    """A final row's step; ``first–last`` where its seeds stopped at different steps."""
    first = row.get("first_step", row["step"])
    return f"{row['step']:,}" if first == row["step"] else f"{first:,}–{row['step']:,}"


def markdown(rows: list[dict[str, Any]], title: str = "capgap sweep",
             inspect_rows: list[dict[str, Any]] | None = None, final: list[dict[str, Any]] | None = None) -> str:
    """The markdown report: per (env, dials) a table of the final rows (``final``, default: each group's
    largest step), then the plot files; with ``inspect_rows``, a table of the final-step inspection
    numbers per (env, dials)."""
    lines = [f"# {title}", ""]
    header = ["rung", "params", "step", "seeds", *TABLE_METRICS, "random", "untrained", "flag"]
    for (env, dials), panel in _panels(_final(rows, final)).items():
        lines += [f"## {env}", "", f"dials: `{dials}`" if dials else "dials: default", ""]
        lines += table(header, [[r["rung"], f"{r['params']:,}", _step_cell(r), str(r["n_seeds"]),
                                 *(fmt_ci(r, m) for m in TABLE_METRICS), fmt_baseline(r, "random"),
                                 fmt_baseline(r, "untrained"), learned_flag(r)] for r in panel])
        lines += ["", "Plots (panel for this env and dials): " + ", ".join(f"`{p}.png`" for p in PLOTS), ""]
    lines += ["Cells are mean [95% Student-t CI] over seeds (seeds: n), each seed at its final evaluation "
              "(step: first–last where seeds stopped apart, as runs trained to competence do); n/a where "
              "undefined (see `capgap.eval.metrics`, `capgap.eval.stats`). "
              "C_hat, A_hat, proxy_hat: the test split calibrated against chance (0 = uniform-random play on the "
              "same levels, 1 = the scripted goal-seeker; proxy_hat: 1 = the proxy-seeker; docs/metrics.md). "
              "random, untrained: the uniform-random policy and the rung's untrained networks (3 init seeds), "
              "train A / test C / test A / test proxy. "
              f"*{NOT_LEARNED}*: A_train < {LEARNED}, so the agent never learned the training task and its "
              "test gap is not goal misgeneralisation.", ""]
    if inspect_rows:
        lines += ["# Looking inside (in-training inspection, `inspect/*`)", ""]
        header = ["rung", "step", "seeds", *INSPECT_METRICS]
        for (env, dials), panel in _panels(final_rows(inspect_rows)).items():
            lines += [f"## {env}", "", f"dials: `{dials}`" if dials else "dials: default", ""]
            lines += table(header, [[r["rung"], f"{r['step']:,}", str(r["n_seeds"]),
                                     *(_ci_or_na(r, m) for m in INSPECT_METRICS)] for r in panel])
            lines += ["", "Curves: `inspect_curves.png`; every layer: `inspect.csv`.", ""]
        lines += ["A_ds: P(goal step | decision square); probe/head: goal-probe accuracy on test episodes that end "
                  "in proxy, at the layer the policy head reads, beside the run's untrained network on the same "
                  "episodes (control_head) and the difference; forecast: AUROC of 'ends in proxy' from the first step, "
                  "best internal layer beside the untrained network's best on the same episodes and the difference, "
                  "then the behaviour-only (pi) and level-only (obs) baselines. Only a difference from the untrained "
                  "control whose CI excludes 0 is evidence. See docs/inspect.md.", ""]
    return "\n".join(lines)


def _ci_or_na(row: dict[str, Any], metric: str) -> str:
    return fmt_ci(row, metric) if metric in row else "n/a"


def table_text(rows: list[dict[str, Any]], inspect_rows: list[dict[str, Any]] | None = None,
               final: list[dict[str, Any]] | None = None) -> str:
    """A compact plain-text table of the final rows (as :func:`markdown`), for a terminal (and of the
    final-step inspection rows, if any)."""
    out: list[str] = []
    widths = (10, 12, 7, *(22 for _ in TEXT_METRICS), 27, 12)  # "-0.32 [-0.38, -0.27]" and a gap
    for (env, dials), panel in _panels(_final(rows, final)).items():
        out.append(f"{env}  [{dials or 'default dials'}]")
        cells_rows = [["rung", "params", "seeds", *TEXT_METRICS, "random A_tr/C/A/proxy", ""]]
        cells_rows += [[r["rung"], f"{r['params']:,}", str(r["n_seeds"]), *(fmt_ci(r, m) for m in TEXT_METRICS),
                        fmt_baseline(r, "random"), learned_flag(r)] for r in panel]
        out += ["  " + "".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in cells_rows]
        out.append("")
    for (env, dials), panel in _panels(final_rows(inspect_rows or [])).items():
        out.append(f"{env}  [{dials or 'default dials'}]  inspection (inspect/*)")
        cells_rows = [["rung", "seeds", *INSPECT_METRICS]]
        cells_rows += [[r["rung"], str(r["n_seeds"]), *(_ci_or_na(r, m) for m in INSPECT_METRICS)] for r in panel]
        widths = (10, 7, *(20 for _ in INSPECT_METRICS))
        out += ["  " + "".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in cells_rows]
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- plots


def _note_if_empty(ax: Axes, panel: list[dict[str, Any]]) -> None:
    """Say so on a panel with no test-split scores (rather than leaving it blank)."""
    if all(math.isnan(r["C_test"]) and math.isnan(r["A_test"]) for r in panel):
        ax.text(0.5, 0.5, "no test-split data", ha="center", va="center", transform=ax.transAxes, color="grey")


def _col(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)


def plot_ca_vs_params(rows: list[dict[str, Any]], final: list[dict[str, Any]] | None = None) -> Figure:
    """C_test and A_test of the final rows (as :func:`markdown`) against parameter count (log x), with CI bands."""
    panels = _panels(_final(rows, final))
    fig, axes = grid(len(panels))
    for ax, ((env, dials), panel) in zip(axes, panels.items(), strict=False):
        panel = sorted(panel, key=lambda r: r["params"])
        x = _col(panel, "params")
        for m, colour in (("C_test", "tab:blue"), ("A_test", "tab:orange")):
            ax.plot(x, _col(panel, m), "o-", color=colour, label=m)
            ax.fill_between(x, _col(panel, m + "_lo"), _col(panel, m + "_hi"), color=colour, alpha=0.2)
            ax.plot(x, _col(panel, f"random_{m}"), ":", color=colour, label=f"{m}, uniform random")
        log_x(ax, x)
        _note_if_empty(ax, panel)
        ax.set(ylim=(-0.05, 1.05), xlabel="parameters", ylabel="score (test split)")
        ax.set_title(_panel_title(env, dials), fontsize=8)
        ax.legend(fontsize=8)
    if not panels:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center")
    return fig


def _curves_by_rung(rows: list[dict[str, Any]], series: tuple[tuple[str, str, str], ...], ylabel: str,
                    note_empty: bool) -> Figure:
    """One panel per (env, dials): each ``(metric, line style, label)`` of ``series`` against env
    steps, one colour per rung; a metric some row lacks is left out of that rung's lines."""
    panels = _panels(rows)
    fig, axes = grid(len(panels))
    cmap = colormaps["viridis"]
    top = max((r["rung_index"] for r in rows), default=1) or 1
    for ax, ((env, dials), panel) in zip(axes, panels.items(), strict=False):
        by_rung: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in panel:
            by_rung[r["rung"]].append(r)
        for rung, rs in by_rung.items():
            rs = sorted(rs, key=lambda r: r["step"])
            colour = cmap(0.9 * rs[0]["rung_index"] / top)
            steps = _col(rs, "step")
            for m, style, label in series:
                if all(m in r for r in rs):
                    ax.plot(steps, _col(rs, m), style, color=colour, label=f"{rung} {label}")
        if note_empty:
            _note_if_empty(ax, panel)
        ax.set(ylim=(-0.05, 1.05), xlabel="env steps", ylabel=ylabel)
        ax.set_title(_panel_title(env, dials), fontsize=8)
        ax.legend(fontsize=6, ncols=2)
    if not panels:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center")
    return fig


def plot_curves(rows: list[dict[str, Any]]) -> Figure:
    """C_test(t) (solid) and A_test(t) (dashed) against env steps, one colour per rung."""
    return _curves_by_rung(rows, (("C_test", ".-", "C"), ("A_test", ".--", "A")), "score (test split)",
                           note_empty=True)


def plot_gap_vs_size(rows: list[dict[str, Any]], final: list[dict[str, Any]] | None = None) -> Figure:
    """gap_test = C_test − A_test of the final rows (as :func:`markdown`) against parameter count, one line
    per (env, dials)."""
    fig = Figure(figsize=(6.5, 4.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    final = _final(rows, final)
    for (env, dials), panel in _panels(final).items():
        panel = sorted(panel, key=lambda r: r["params"])
        y = _col(panel, "gap_test")
        err = np.nan_to_num(np.clip([y - _col(panel, "gap_test_lo"), _col(panel, "gap_test_hi") - y], 0, None))
        ax.errorbar(_col(panel, "params"), y, yerr=err, fmt="o-", capsize=3,
                    label=f"{env.split('/')[-1]} {dials}".strip()[:70])
    ax.axhline(0, color="grey", lw=0.8)
    log_x(ax, _col(final, "params"))
    ax.set(xlabel="parameters", ylabel="gap_test = C_test − A_test")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return fig


def plot_inspect_curves(inspect_rows: list[dict[str, Any]]) -> Figure:
    """Per (env, dials): the goal probe at the policy head's input on proxy-ending test episodes
    (solid) and the forecast's best-layer AUROC (dashed) against env steps, one colour per rung."""
    series = (("probe/head", ".-", "probe/head"), ("forecast/best", ".--", "forecast/best"))
    return _curves_by_rung(inspect_rows, series, "probe accuracy / AUROC", note_empty=False)


# ---------------------------------------------------------------- files


def run_dirname(env: str, dials: str, rung: str) -> str:
    """TensorBoard run folder for one (env, dials, rung): ``<env>__<rung>__<dials>``, unsafe characters as ``_``."""
    def safe(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9._=,-]", "_", s)
    return f"{safe(env)}__{safe(rung)}__{safe(dials) or 'default'}"


def _jsonable(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _write_tensorboard(rows: list[dict[str, Any]], figs: dict[str, Figure], md: str, tb_dir: Path,
                       inspect_rows: list[dict[str, Any]] | None = None,
                       final: list[dict[str, Any]] | None = None) -> None:
    """The TensorBoard log: plots and report at the top, one run per (env, dials, rung) below, its
    ``final/*`` scalars from the final rows (as :func:`markdown`)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    if tb_dir.exists():  # a rerun replaces the log rather than appending duplicate events
        shutil.rmtree(tb_dir)
    with SummaryWriter(str(tb_dir)) as w:
        for name, fig in figs.items():
            w.add_image(f"plots/{name}", rgb(fig), 0, dataformats="HWC")
        w.add_text("report", md)

    def run_key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["env"], "; ".join(x for x in (r["dials"], r["setting"]) if x), r["rung"]

    by_run: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_run[run_key(r)].append(r)
    finals = {run_key(r): r for r in _final(rows, final)}
    used: set[str] = set()
    for (env, dials, rung), rs in by_run.items():
        name = base = run_dirname(env, dials, rung)
        for i in range(1, len(used) + 2):  # distinct runs whose names sanitise alike get a suffix
            if name not in used:
                break
            name = f"{base}__{i}"
        used.add(name)
        last = finals[(env, dials, rung)]
        hp = {"env": env, "dials": dials, "rung": rung, "rung_index": last["rung_index"],
              "params": last["params"], "family": last["family"], "n_seeds": last["n_seeds"],
              "step": last["step"]}
        with SummaryWriter(str(tb_dir / name)) as w:
            # hparams() rather than add_hparams(), which would open a stray sub-run of its own
            for summary in hparams(hp, {f"final/{m}": last[m] for m in TEXT_METRICS}):
                w.file_writer.add_summary(summary)
            for m in TEXT_METRICS:
                w.add_scalar(f"final/{m}", last[m], last["step"])
            baselines = [f"{policy}_{m}" for policy in ("random", "untrained") for m in BASELINE_METRICS]
            for r in sorted(rs, key=lambda r: r["step"]):
                for m in TEXT_METRICS:
                    w.add_scalar(f"sweep/{m}", r[m], r["step"])
                for m in baselines:  # flat lines beside the curves, where computed (capgap.eval.chance.annotate)
                    if r[m] is not None and not math.isnan(r[m]):
                        w.add_scalar(f"sweep/{m}", r[m], r["step"])
            for r in inspect_rows or []:
                if (r["env"], r["dials"], r["rung"]) == (env, dials, rung):
                    for m in [k for k in r if k.endswith("_hi")]:
                        w.add_scalar(f"sweep/inspect/{m[:-3]}", r[m[:-3]], r["step"])


def write_report(rows: list[dict[str, Any]], out_dir: Path, title: str = "capgap sweep",
                 inspect_rows: list[dict[str, Any]] | None = None,
                 final: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write the report files into ``out_dir`` (created if needed); returns name -> path of each.
    ``final``: the rows of the tables, the size plots and ``final/*`` (``metrics.compute_final``: every
    seed where it stopped); default: each group's row at its largest step.

    Names: ``md``, ``csv``, ``json``, the three plot names of ``PLOTS`` and ``tensorboard``; with
    ``inspect_rows``, also ``inspect_csv``, ``inspect_json`` and ``inspect_curves``.
    An existing ``out_dir/tensorboard`` is replaced.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"md": out_dir / "report.md", "csv": out_dir / "report.csv",
                              "json": out_dir / "report.json"}

    md = markdown(rows, title, inspect_rows, final)
    paths["md"].write_text(md, encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_KEYS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in ROW_KEYS} for r in rows)
    paths["json"].write_text(
        json.dumps([{k: _jsonable(r[k]) for k in ROW_KEYS} for r in rows], indent=1, allow_nan=False) + "\n",
        encoding="utf-8")

    figs = {"ca_vs_params": plot_ca_vs_params(rows, final), "curves": plot_curves(rows),
            "gap_vs_size": plot_gap_vs_size(rows, final)}
    for name, fig in figs.items():
        paths[name] = out_dir / f"{name}.png"
        fig.savefig(paths[name], dpi=DPI)

    if inspect_rows:
        keys = list(dict.fromkeys(k for r in inspect_rows for k in r))
        paths["inspect_csv"], paths["inspect_json"] = out_dir / "inspect.csv", out_dir / "inspect.json"
        with paths["inspect_csv"].open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=keys, restval="")
            writer.writeheader()
            writer.writerows(inspect_rows)
        paths["inspect_json"].write_text(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in inspect_rows],
                                                    indent=1, allow_nan=False) + "\n", encoding="utf-8")
        figs["inspect_curves"] = plot_inspect_curves(inspect_rows)
        paths["inspect_curves"] = out_dir / "inspect_curves.png"
        figs["inspect_curves"].savefig(paths["inspect_curves"], dpi=DPI)

    paths["tensorboard"] = out_dir / "tensorboard"
    _write_tensorboard(rows, figs, md, paths["tensorboard"], inspect_rows, final)
    return paths


def build(paths: list[Path], out: Path | None = None, untrained: bool = True,
          progress: bool = True) -> tuple[str, dict[str, Path], Path]:
    """``capgap report``: the metrics with CIs over seeds of the evaluated runs under ``paths`` (sweep
    or run dirs, reported together), written to ``out`` (default: ``<first path>/report``). Returns
    the text to print (the table, and the mitigation study if it is one), the files written and ``out``.
    ``untrained``: also the untrained-network baseline (seconds per rung)."""
    from capgap.eval import chance, metrics, mitigation
    from capgap.eval.evaluator import episode_files, find_runs
    from capgap.rundir import RunError

    paths = [Path(p) for p in paths]
    files = [f for path in paths for f in episode_files(path)]
    if not files:
        raise RunError(f"no evaluated checkpoints under {paths[0]}; run capgap eval {paths[0]} first")
    records = metrics.load_episodes(files)
    rows = chance.annotate(metrics.compute(records), untrained_baseline=untrained, progress=progress)
    final = chance.annotate(metrics.compute_final(records), untrained_baseline=untrained)  # cached: no cost
    runs = [r for path in paths for r in find_runs(path)]
    inspected = [run / "inspect.jsonl" for run in runs if (run / "inspect.jsonl").exists()]
    inspect_rows = metrics.compute_inspections(metrics.load_inspections(inspected)) if inspected else None
    out = Path(out) if out else paths[0] / "report"
    written = write_report(rows, out, inspect_rows=inspect_rows, final=final)
    text = table_text(rows, inspect_rows, final)
    study, study_files = mitigation.write_mitigation(records, out, runs)
    return text + (f"\n{study}" if study else ""), written | study_files, out
