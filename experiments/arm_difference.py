"""Two arms of a mitigation study, point by point: arm A's mean, arm B's, and A − B with its interval.

    python experiments/arm_difference.py --a sweeps/repair-mix sweeps/repair-mix-base \\
        --b sweeps/repair-only sweeps/repair-only-base --metrics A_test A_train

Each arm is one or more evaluated sweeps along one numeric axis (``capgap report``'s mitigation
curves: ``repair_levels``, ``num_levels``, ``p_disambiguate``, ...); the two arms may use different
axes (the mixed repair recipe grids ``repair_levels``, the older one ``num_levels``). Points are
paired by (env, rung, axis value), each seed at its final evaluation, and the difference of means
gets a Welch t-interval over the two groups of seeds (``capgap.eval.stats.difference``). Where a
sweep grids ``sampler``, ``--where-a sampler=plr-oracle`` picks one arm out of it. ``--plot PATH``
draws each metric against the axis, one panel per rung, arm A solid and arm B dashed, with 95% bands.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from capgap.eval import metrics, mitigation, stats
from capgap.eval.evaluator import episode_files, find_runs
from capgap.eval.mitigation import Point

Key = tuple[str, str, int, float]
"""(env, rung, rung index, axis value)."""
DEFAULTS: dict[str, str] = {"sampler": "dr"}
"""Settings that records leave out at their default value, so that ``--where-b sampler=dr`` finds them."""


def arm(paths: list[Path], where: str = "") -> tuple[str, dict[Key, Point]]:
    """(the axis, its points) of the evaluated sweeps ``paths``, keeping the curves whose other
    dials and settings contain every ``k=v`` of ``where`` (comma-separated)."""
    files = [f for p in paths for f in episode_files(p)]
    if not files:
        raise SystemExit(f"arm_difference: no evaluated runs under {', '.join(map(str, paths))}; "
                         "run capgap eval on them first")
    runs = [r for p in paths for r in find_runs(p)]
    return arm_of(metrics.load_episodes(files), ", ".join(map(str, paths)), where, mitigation.done_of(runs))


def arm_of(records: list[dict], name: str, where: str = "", done: dict | None = None
           ) -> tuple[str, dict[Key, Point]]:
    """:func:`arm` on episode records (``name`` says where they came from in errors)."""
    axes = mitigation.axes(mitigation.seed_metrics(records))
    if len(axes) != 1:
        raise SystemExit(f"arm_difference: {name} varies along {axes or 'no axis'}; give the sweeps of one axis")
    want = [w for w in where.split(",") if w]
    points: dict[Key, Point] = {}
    for curve in mitigation.curves(records, axes[0], done):
        rest = [p for p in curve.rest.split(",") if p]
        rest += [f"{k}={v}" for k, v in DEFAULTS.items() if not any(p.startswith(f"{k}=") for p in rest)]
        if all(w in rest for w in want):
            for pt in curve.points:
                key = (curve.env, curve.rung, curve.rung_index, pt.x)
                if key in points:
                    raise SystemExit(f"arm_difference: two arms of {name} share "
                                     f"{curve.env} {curve.rung} {axes[0]}={pt.x:g}; pick one with --where-a/-b "
                                     "(e.g. sampler=dr)")
                points[key] = pt
    return axes[0], points


def rows(a: dict[Key, Point], b: dict[Key, Point], metric: str) -> list[tuple]:
    """(env, rung, x, n_a, mean_a, n_b, mean_b, (d, lo, hi)) for every point both arms hold."""
    out = []
    for key in sorted(set(a) & set(b), key=lambda k: (k[0], k[2], k[3])):
        va = [s[metric] for s in a[key].seeds.values()]
        vb = [s[metric] for s in b[key].seeds.values()]
        d = stats.difference(va, vb)
        out.append((key[0], key[1], key[3], len(va), sum(va) / len(va), len(vb), sum(vb) / len(vb), d))
    return out


def _d(d: tuple[float, float, float]) -> str:
    if math.isnan(d[1]):
        return f"{d[0]:+.2f} (no interval)"
    return f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"


def plot(a: dict[Key, Point], b: dict[Key, Point], metrics_: list[str], labels: tuple[str, str],
         xlabel: str = "x") -> object:
    """One panel per (env, rung) both arms hold: each metric's mean and 95% band against the axis
    (log x), arm A solid with dots, arm B dashed with crosses; dotted, uniform random play's test A on
    the env at its default dials."""
    import numpy as np

    from capgap.eval.chance import references
    from capgap.eval.figures import grid

    panels = sorted({k[:3] for k in set(a) & set(b)}, key=lambda k: (k[0], k[2]))
    fig, axs = grid(len(panels))
    colours = ("tab:orange", "tab:blue", "tab:red", "tab:green", "tab:purple")
    for ax, (env, rung, idx) in zip(axs, panels, strict=False):
        for arm_points, style, label in ((a, "o-", labels[0]), (b, "x--", labels[1])):
            pts = sorted((k[3], p) for k, p in arm_points.items() if k[:3] == (env, rung, idx))
            xs = np.array([x for x, _ in pts])
            for metric, colour in zip(metrics_, colours, strict=False):
                ci = np.array([p.ci(metric) for _, p in pts])
                ax.plot(xs, ci[:, 0], style, color=colour, label=f"{metric}, {label}")
                ax.fill_between(xs, ci[:, 1], ci[:, 2], color=colour, alpha=0.12)
        ax.axhline(references(env, {}).score("random", "test")["A"], color="grey", ls=":",
                   label="A_test, uniform random play")
        ax.set_xscale("log")
        ax.set(ylim=(-0.05, 1.05), xlabel=xlabel, title=f"{env.split('/')[-1]} {rung}")
        ax.legend(fontsize=6)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="arm A: evaluated sweep dirs")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="arm B: evaluated sweep dirs")
    ap.add_argument("--where-a", default="", help="keep arm A's curves with these settings, e.g. sampler=plr-oracle")
    ap.add_argument("--where-b", default="", help="the same for arm B")
    ap.add_argument("--metrics", nargs="+", default=["A_test"], help="per-seed metrics, e.g. A_test C_train")
    ap.add_argument("--labels", nargs=2, default=("A", "B"), help="the two arms' names in the figure")
    ap.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    args = ap.parse_args()
    axis_a, a = arm(args.a, args.where_a)
    axis_b, b = arm(args.b, args.where_b)
    if not set(a) & set(b):
        sys.exit(f"arm_difference: the arms share no (env, rung, {axis_a}) point; are they the same study?")
    for metric in args.metrics:
        print(f"\n{metric}: A = {' '.join(map(str, args.a))} ({axis_a}), B = {' '.join(map(str, args.b))} "
              f"({axis_b}); A − B with a Welch 95% interval over seeds\n")
        print("| env | rung | x | A (n) | B (n) | A − B [95% CI] |\n|---|---|---:|---|---|---|")
        for env, rung, x, na, ma, nb, mb, d in rows(a, b, metric):
            print(f"| {env.split('/')[-1]} | {rung} | {x:g} | {ma:.2f} ({na}) | {mb:.2f} ({nb}) | {_d(d)} |")
    if args.plot:
        from capgap.eval.figures import DPI

        plot(a, b, args.metrics, tuple(args.labels), f"{axis_a} (A), {axis_b} (B)").savefig(args.plot, dpi=DPI)
        print(f"\nfigure: {args.plot}")


if __name__ == "__main__":
    main()
