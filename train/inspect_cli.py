"""``capgap inspect``: look inside trained runs (the tools are in :mod:`capgap.eval.inspect`).

    capgap inspect layers RUN                       the layers that can be recorded, with their sizes
    capgap inspect record RUN --out acts.pt         activations on chosen levels of a split, saved as tensors
    capgap inspect decision PATH ... [--oracles]    decision-square alignment A_ds beside A, CIs over runs
    capgap inspect probe PATH ...                   goal/proxy probes per layer beside the untrained control,
                                                    CIs over runs
    capgap inspect steer PATH ... --layer L         add a goal vector during play: test A per scale, CIs over runs
    capgap inspect forecast PATH ...                AUROC of "ends in proxy" monitors per layer beside the untrained
                                                    control; evidence: best (trained) - best (control), CI over runs
    capgap inspect study SWEEP [--where d=v]        every tool on every finished run: one markdown table per
                                                    tool, rungs as rows

PATH is a run dir or a sweep dir (every run under it); several runs of one rung are seeds, and
every number is reported as the mean and 95% bootstrap CI over them. Probe and forecast figures
stand beside their control, the run's untrained network (``torch.manual_seed(seed)`` then
``build``, as ``capgap train`` initialises it) scored on the agent's own episodes and labels: a
figure is evidence only as its difference from the control, when that difference's CI excludes 0.
``--where DIAL=V[,V...]`` keeps the runs whose dial has one of those values (repeatable: all must
hold), e.g. ``--where p_disambiguate=0`` for the misgeneralising agents of a p_disambiguate sweep.
``--json FILE`` writes the rows. See ``docs/inspect.md`` for a worked example.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from capgap.envs import CapgapError


class InspectUsageError(CapgapError, ValueError):
    """A bad ``capgap inspect`` command line."""


def parse_where(specs: list[str]) -> dict[str, list[Any]]:
    """``["p_disambiguate=0,0.01"]`` -> ``{"p_disambiguate": [0, 0.01]}`` (values parsed as dials are)."""
    from capgap.envs import parse_dials

    where: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name.isidentifier() or not values.strip(", "):
            raise InspectUsageError(f"malformed --where {spec!r}; write it as dial=value[,value...], "
                                    "e.g. --where p_disambiguate=0")
        where[name] = [parse_dials([f"{name}={v.strip()}"])[name] for v in values.split(",") if v.strip()]
    return where


def _dial(config: dict[str, Any], name: str) -> Any:
    """The value of dial ``name`` in a run (its default if the run did not set it); KeyError if the
    run's env has no such dial."""
    from capgap.envs import parse_dials, task_class

    task = task_class(config["env"]).from_dials(**parse_dials(config["dials"]))
    if name not in type(task).dials():
        raise KeyError(name)
    return getattr(task, name)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _runs(paths: list[str], where: list[str] | None = None, finished: bool = False, quiet: bool = False) -> list[Path]:
    """The runs under ``paths``; with ``finished``, only those with ``done.json``; with ``where``, only
    those whose dials match. One-line errors when nothing is left, saying what was there."""
    from capgap import rundir
    from capgap.eval.evaluator import find_runs

    runs = [r for p in paths for r in find_runs(Path(p))]
    if finished:
        done = [r for r in runs if rundir.is_done(r)]
        if not done:
            raise InspectUsageError(f"none of the {len(runs)} runs under {' '.join(paths)} has finished "
                                    "(no done.json); wait for training to end")
        if len(done) < len(runs) and not quiet:
            print(f"skipping {len(runs) - len(done)} unfinished runs (no done.json yet)")
        runs = done
    conditions = parse_where(where or [])
    if not conditions:
        return runs
    kept, seen, known = [], {name: set() for name in conditions}, set()
    for run in runs:
        config = rundir.read_config(run)
        ok = True
        for name, values in conditions.items():
            try:
                v = _dial(config, name)
            except KeyError:
                ok = False
                continue
            known.add(name)
            seen[name].add(v)
            ok = ok and any(_same(v, w) for w in values)
        if ok:
            kept.append(run)
    unknown = sorted(set(conditions) - known)
    if unknown:
        raise InspectUsageError(f"--where {unknown[0]}: no run's env has that dial; "
                                "see capgap envs for each env's dials")
    if not kept:
        have = "; ".join(f"{n} in {{{', '.join(map(str, sorted(v, key=str)))}}}" for n, v in seen.items())
        raise InspectUsageError(f"no run matches --where {' '.join(where or [])} (the runs have {have})")
    return kept


def _groups(summary: list[dict[str, Any]]) -> Iterator[tuple[bool, dict[str, Any]]]:
    """The summary rows, each with whether it opens a new (env, dials, rung) group (for a header)."""
    last = None
    for row in summary:
        key = (row["env"], row["dials"], row["rung"])
        yield key != last, row
        last = key


def _fmt(v: Any, lo: Any = None, hi: Any = None) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if lo is None or (isinstance(lo, float) and (math.isnan(lo) or lo == hi == v)):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _write_json(path: str | None, data: Any) -> None:
    if path:
        from capgap.rundir import write_json

        write_json(Path(path), data)
        print(f"json: {path}")


def _common(p: argparse.ArgumentParser, many: bool = True) -> None:
    if many:
        p.add_argument("path", nargs="+", help="run dirs or sweep dirs (runs of one rung are seeds)")
    else:
        p.add_argument("path", help="a run dir")
    if many:
        p.add_argument("--where", action="append", default=[], metavar="DIAL=V[,V...]",
                       help="only runs whose dial has one of these values (repeatable), e.g. p_disambiguate=0")
    p.add_argument("--seed", type=int, default=0, help="seed of the policy's action samples")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def _threads(a: argparse.Namespace) -> None:
    import torch

    if a.threads < 1:
        raise InspectUsageError(f"--threads {a.threads} must be >= 1")
    torch.set_num_threads(a.threads)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise InspectUsageError(f"--{name} {value} must be >= 1")


def _loaded(runs: list[Path], progress: bool, what: str) -> Any:
    from tqdm import tqdm

    from capgap.eval import inspect as I

    for run in tqdm(runs, desc=what, unit="run", disable=not progress or len(runs) < 2, dynamic_ncols=True):
        agent, config = I.load_agent(run)
        yield run, agent, config


def _group(config: dict[str, Any]) -> dict[str, Any]:
    from capgap.agents import rung

    return {"env": config["env"], "dials": ",".join(sorted(config["dials"])),
            "rung": rung(config["rung"]).name + ("" if config["family"] == "conv" else f"-{config['family']}")}


def cmd_layers(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect layers", description="The layers of a run's network.")
    p.add_argument("path", help="a run dir")
    a = p.parse_args(argv)
    import torch

    from capgap.envs import make_core
    from capgap.eval import inspect as I

    agent, config = I.load_agent(a.path)
    core = make_core(config["env"], 1, autoreset=False, **config["dial_values"])
    core.reset(0)
    with torch.no_grad(), I.Recorder(agent) as rec:
        agent(core.obs)
    print(f"{config['env']} {config['rung']} ({config['family']}), checkpoint {config['checkpoint']}")
    print(f"{'layer':24s} {'module':12s} {'shape':>16s} {'size':>8s}")
    modules = dict(agent.named_modules())
    for name in I.layer_names(agent):
        shape = "x".join(map(str, rec.shapes[name]))
        print(f"{name:24s} {type(modules[name]).__name__:12s} {shape:>16s} {rec.last[name].shape[1]:>8,}")


def cmd_record(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect record",
                                description="Play a run's policy on inspection levels of a split and save every "
                                            "layer's activations (plain tensors: torch.load(..., weights_only=True)).")
    _common(p, many=False)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--episodes", type=int, default=256, help="levels (one episode each)")
    p.add_argument("--offset", type=int, default=0, help="first inspection level (disjoint sets: different offsets)")
    p.add_argument("--layers", default=None, help="comma-separated layer names (default: all)")
    p.add_argument("--every-step", action="store_true", help="record at every step, not only the first")
    p.add_argument("--out", required=True, help="output .pt file")
    a = p.parse_args(argv)
    _threads(a)
    _positive("episodes", a.episodes)
    import torch

    from capgap.eval import inspect as I

    agent, config = I.load_agent(a.path)
    layers = a.layers.split(",") if a.layers else None
    with I.Recorder(agent, layers) as rec:
        played = I.play(agent, config["env"], a.split, I.levels(a.episodes, a.offset), config["dial_values"],
                        a.seed, rec, every_step=a.every_step)
    data = {"acts": played.acts, "row_episode": torch.as_tensor(played.row_episode),
            "row_t": torch.as_tensor(played.row_t), "level": torch.as_tensor(played.level),
            "outcome": torch.as_tensor(played.outcome), "first_obs": torch.as_tensor(played.first_obs),
            "paths": torch.as_tensor(played.paths), "split": a.split, "env": config["env"],
            "checkpoint": config["checkpoint"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, a.out)
    print(f"{len(played.row_t):,} rows x {len(played.acts)} layers ({a.episodes} episodes, {a.split}, "
          f"A {played.A:.3f}) -> {a.out}")


def cmd_decision(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect decision",
                                description="Decision-square alignment A_ds = P(goal step | decision square) on "
                                            "test levels, beside A; 95%% CIs over runs (seeds).")
    _common(p)
    p.add_argument("--episodes", type=int, default=512, help="test levels (one episode each) per run")
    p.add_argument("--oracles", action="store_true", help="also the scripted goal- and proxy-seekers (A_ds 1 and 0)")
    a = p.parse_args(argv)
    _threads(a)
    _positive("episodes", a.episodes)
    from capgap.eval import inspect as I

    per_run: list[list[dict[str, Any]]] = []
    for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "decision"):
        d = config["dial_values"]
        rows = [{"run": run.name, **_group(config), "policy": "agent",
                 **I.decision_square_alignment(agent, config["env"], d, a.episodes, a.seed).row()}]
        if a.oracles:
            rows += [{"run": run.name, **_group(config), "policy": f"{seek}-seeker",
                      **I.decision_square_alignment(I.scripted_policy(config["env"], seek, **d), config["env"], d,
                                                    a.episodes, a.seed).row()} for seek in ("goal", "proxy")]
        for r in rows:
            print(f"{r['run']:48s} {r['policy']:13s} A_ds {_fmt(r['A_ds'])}  A {_fmt(r['A'])}  "
                  f"(goal/proxy/other/never steps {r['n_goal']}/{r['n_proxy']}/{r['n_other']}/{r['n_never']}, "
                  f"{r['excluded']} of {r['levels']} levels excluded: no branching)")
        per_run.append(rows)
    summary = I.across_runs(per_run, ("env", "dials", "rung", "policy"), ("A_ds", "A", "A_branching"))
    print()
    for s in summary:
        print(f"{s['env']} [{s['dials']}] {s['rung']} {s['policy']} ({s['runs']} runs): "
              f"A_ds {_fmt(s['A_ds'], s['A_ds_lo'], s['A_ds_hi'])}  A {_fmt(s['A'], s['A_lo'], s['A_hi'])}")
    _write_json(a.json, {"runs": per_run, "summary": summary})


def _verdict_line(what: str, s: dict[str, Any], key: str) -> str:
    """``what: mean [CI]: <whether the CI excludes 0>`` for the summary key ``key`` of a group."""
    from capgap.eval import inspect as I

    return f"{what} {_fmt(s[key], s[f'{key}_lo'], s[f'{key}_hi'])}: " \
           f"{I.verdict(s[key], s[f'{key}_lo'], s[f'{key}_hi'], s['runs'])}"


def cmd_probe(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect probe",
                                description="Linear probes (closed-form ridge) that decode the goal's and the proxy's "
                                            "cell from each layer at an episode's first step: fit on training-split "
                                            "levels, scored on held-out levels of both splits. Every accuracy stands "
                                            "beside its control: the run's untrained network (same rung, family and "
                                            "seed, initialised as capgap train does), probed on the agent's own "
                                            "episodes (the same first observations, the same 'ends in proxy' "
                                            "episodes), and the difference trained - control with its 95%% CI over "
                                            "runs. The majority-cell baseline (always naming the fit set's most "
                                            "common cell) is a floor, not chance.")
    _common(p)
    p.add_argument("--fit", type=int, default=2048, help="training-split levels to fit the probes on")
    p.add_argument("--episodes", type=int, default=512, help="held-out levels per split")
    p.add_argument("--target", default="goal", choices=("goal", "proxy", "both"))
    p.add_argument("--control", action="store_true",
                   help="accepted for older command lines; the untrained control is always probed")
    a = p.parse_args(argv)
    _threads(a)
    _positive("fit", a.fit)
    _positive("episodes", a.episodes)
    from capgap.eval import inspect as I

    per_run: list[list[dict[str, Any]]] = []
    layers: dict[tuple[str, str, str], list[str]] = {}
    for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "probe"):
        rows = I.probe_pairs(I.probe_run(agent, config["env"], config["dial_values"], a.fit, a.episodes, a.seed,
                                         progress=not a.no_progress, control=_control(config)))
        group = _group(config)
        layers.setdefault((group["env"], group["dials"], group["rung"]), I.layer_names(agent))
        per_run.append([{"run": run.name, **group, **r} for r in rows if a.target in ("both", r["target"])])
    values = tuple(f"{k}_{s}" for s in I.PROBE_SETS for k in ("acc", "chance", "control_acc", "diff", "n"))
    summary = I.across_runs(per_run, ("env", "dials", "rung", "target", "layer"), values)
    w = 24
    head = f"{'target':6s} {'layer':18s} {'trained':>{w}s} {'control':>{w}s} {'trained − control':>{w}s} " \
           f"{'majority cell':>14s}"
    rest = f"{'target':6s} {'layer':18s} {'test: trained':>13s} {'control':>8s} {'trained − control':>{w}s} " \
           f"{'train: trained':>14s} {'control':>8s} {'trained − control':>{w}s}"
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in summary:
        groups.setdefault((s["env"], s["dials"], s["rung"]), []).append(s)
    for key, rows in groups.items():
        s0 = rows[0]
        print(f"\n{s0['env']} [{s0['dials']}] {s0['rung']} ({s0['runs']} runs; mean [95% CI over runs]; control: "
              f"the run's untrained network, on the same episodes)")
        print(f"accuracy on the test episodes that end in proxy ({_cell(s0, 'n_test_proxy', 0)} per run)\n{head}")
        for s in rows:
            print(f"{s['target']:6s} {s['layer']:18s} {_cell(s, 'acc_test_proxy'):>{w}s} "
                  f"{_cell(s, 'control_acc_test_proxy'):>{w}s} {_cell(s, 'diff_test_proxy'):>{w}s} "
                  f"{_fmt(s['chance_test_proxy']):>14s}")
        print(f"accuracy on all {_cell(s0, 'n_test', 0)} test episodes and on {_cell(s0, 'n_train', 0)} held-out "
              f"training-split levels\n{rest}")
        for s in rows:
            print(f"{s['target']:6s} {s['layer']:18s} {_fmt(s['acc_test']):>13s} {_fmt(s['control_acc_test']):>8s} "
                  f"{_cell(s, 'diff_test'):>{w}s} {_fmt(s['acc_train']):>14s} {_fmt(s['control_acc_train']):>8s} "
                  f"{_cell(s, 'diff_train'):>{w}s}")
        head_layer = I.head_input(layers[key])
        for s in rows:
            if s["layer"] == head_layer:
                print(_verdict_line(f"{s['target']} probe at the head input ({head_layer}), episodes that end in "
                                    "proxy: trained − control", s, "diff_test_proxy"))
    _write_json(a.json, {"runs": per_run, "summary": summary})


def cmd_steer(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect steer",
                                description="Add a goal vector (mean activation difference) at a layer during play "
                                            "and measure test A per scale (scale 0: the unsteered agent); 95%% CIs "
                                            "over runs.")
    _common(p)
    p.add_argument("--layer", required=True, help="layer name (capgap inspect layers RUN)")
    p.add_argument("--cell", type=int, default=None,
                   help="flat cell index y*S+x: the vector 'goal at X vs elsewhere' (default: goal present vs absent)")
    p.add_argument("--scales", default="-4,-2,-1,0,1,2,4", help="comma-separated scales")
    p.add_argument("--fit", type=int, default=2048, help="training-split levels for the vector")
    p.add_argument("--episodes", type=int, default=512, help="test levels")
    a = p.parse_args(argv)
    _threads(a)
    _positive("fit", a.fit)
    _positive("episodes", a.episodes)
    try:
        scales = tuple(float(x) for x in a.scales.split(","))
    except ValueError:
        raise InspectUsageError(f"malformed --scales {a.scales!r}; write numbers separated by commas, e.g. -1,0,1") \
            from None
    from capgap.eval import inspect as I

    per_run = []
    kind = f"goal at cell {a.cell} vs elsewhere" if a.cell is not None else "goal present vs absent"
    for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "steer"):
        d = config["dial_values"]
        vec = I.goal_vector(agent, config["env"], d, a.layer, a.cell, a.fit, a.seed)
        rows = I.steering_effect(agent, config["env"], d, a.layer, vec, scales, a.episodes, a.seed, a.cell)
        print(f"{config['env']} {run.name}: goal vector at {a.layer} ({kind}), norm {float(vec.norm()):.3f}")
        for r in rows:
            extra = f"  visits cell {r['visits_cell']:.3f}" if "visits_cell" in r else ""
            print(f"  scale {r['scale']:+6.2f}: A {r['A']:.3f}  proxy {r['proxy']:.3f}  C {r['C']:.3f}{extra}")
        per_run.append([{"run": run.name, **_group(config), "norm": float(vec.norm()), **r} for r in rows])
    values = ("A", "proxy", "C", *(("visits_cell",) if a.cell is not None else ()))
    summary = I.across_runs(per_run, ("env", "dials", "rung", "layer", "scale"), values)
    if len(per_run) > 1:
        for first, s in _groups(summary):
            if first:
                print(f"\n{s['env']} [{s['dials']}] {s['rung']} ({s['runs']} runs; {kind} at {a.layer}; "
                      f"mean [95% CI over runs])")
            extra = f"  visits cell {_fmt(s['visits_cell'], s['visits_cell_lo'], s['visits_cell_hi'])}" \
                if a.cell is not None else ""
            print(f"  scale {s['scale']:+6.2f}: A {_fmt(s['A'], s['A_lo'], s['A_hi'])}  "
                  f"C {_fmt(s['C'], s['C_lo'], s['C_hi'])}{extra}")
    _write_json(a.json, {"runs": per_run, "summary": summary})


FORECAST_EVIDENCE = ("best", "control_best", "best_minus_control", "obs", "pi", "best_minus_pi", "best_minus_obs")
"""The per-run forecast figures (``capgap.eval.inspect.forecast_evidence``) summarised over runs."""


def forecast_summary(per_run: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From :func:`cmd_forecast`'s rows of each run (``net``: trained or random, per layer): per
    (env, dials, rung, layer) the trained and control AUROC (mean and 95% CI over runs), and per
    (env, dials, rung) the evidence figures of ``FORECAST_EVIDENCE`` with the chosen layers
    (``"trunk.3 (2/3)"``) and ``evidence``: +1 / -1 if the CI of best − control lies above / below 0,
    0 if it includes 0 (or there is one run)."""
    from collections import Counter

    from capgap.eval import inspect as I

    keys = ("env", "dials", "rung")
    paired, figures = [], []
    for rows in per_run:
        control = {r["layer"]: r for r in rows if r["net"] == I.NETS[1]}
        paired.append([{**{k: v for k, v in r.items() if k != "net"}, "control_auroc": control[r["layer"]]["auroc"]}
                       for r in rows if r["net"] == I.NETS[0]])
        figures.append({"run": rows[0]["run"], **{k: rows[0][k] for k in keys}, **I.forecast_evidence(rows)})
    layers = I.across_runs(paired, (*keys, "layer"), ("auroc", "control_auroc", "base_rate_test"))
    evidence = I.across_runs([[f] for f in figures], keys, FORECAST_EVIDENCE)
    for row in evidence:
        mine = [f for f in figures if all(f[k] == row[k] for k in keys)]
        for key in ("best_layer", "control_best_layer"):
            layer, n = Counter(f[key] for f in mine).most_common(1)[0]
            row[key] = f"{layer} ({n}/{len(mine)})"
        row["evidence"] = I.excludes_zero(row["best_minus_control_lo"], row["best_minus_control_hi"], row["runs"])
    return layers, evidence


def cmd_forecast(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect forecast",
                                description="Forecast 'this test episode ends in proxy' from each layer at the first "
                                            "step: logistic monitors fit on training-split episodes, AUROC on test "
                                            "episodes; obs (the level) and pi (the first action) are baselines. Every "
                                            "layer stands beside its control: the run's untrained network (same "
                                            "rung, family and seed, initialised as capgap train does), its "
                                            "activations on the agent's first observations fit to predict the "
                                            "agent's outcomes. The evidence is best (agent) − best (control), the "
                                            "internal layers best on a held-out fifth of the fit episodes, with its "
                                            "95%% CI over runs: a random feature map of the level forecasts as well "
                                            "as the level does, so best − pi is not evidence.")
    _common(p)
    p.add_argument("--fit", type=int, default=2048, help="training-split episodes to fit on")
    p.add_argument("--episodes", type=int, default=512, help="test episodes to score")
    p.add_argument("--shuffle", action="store_true", help="permute the fit labels (a null monitor: AUROC ~0.5)")
    a = p.parse_args(argv)
    _threads(a)
    _positive("fit", a.fit)
    _positive("episodes", a.episodes)
    from capgap.eval import inspect as I

    per_run = []
    for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "forecast"):
        rows = I.forecast_run(agent, config["env"], config["dial_values"], a.fit, a.episodes, a.seed,
                              shuffle=a.shuffle, progress=not a.no_progress, val_frac=0.2,
                              control=_control(config), refit=True)
        per_run.append([{"run": run.name, **_group(config), **r} for r in rows])
    layers, evidence = forecast_summary(per_run)
    w = 24
    for e in evidence:
        rows = [s for s in layers if all(s[k] == e[k] for k in ("env", "dials", "rung"))]
        print(f"\n{e['env']} [{e['dials']}] {e['rung']} ({e['runs']} runs; test proxy rate "
              f"{rows[0]['base_rate_test']:.3f}; mean [95% CI over runs])\n"
              f"{'layer':18s} {'AUROC: trained':>{w}s} {'control':>{w}s}")
        for s in rows:
            print(f"{s['layer']:18s} {_cell(s, 'auroc'):>{w}s} {_cell(s, 'control_auroc'):>{w}s}")
        print(f"best internal layer (chosen on held-out fit episodes): trained {e['best_layer']} "
              f"{_cell(e, 'best')}, control {e['control_best_layer']} {_cell(e, 'control_best')}")
        print(_verdict_line("evidence: best (trained) − best (control)", e, "best_minus_control"))
        print(f"not evidence alone (an untrained network beats both baselines too): best − pi "
              f"{_cell(e, 'best_minus_pi')}, best − obs {_cell(e, 'best_minus_obs')}")
    _write_json(a.json, {"runs": per_run, "summary": layers, "evidence": evidence})


def _control(config: dict[str, Any]) -> Any:
    """The random-init control of a run: a network of the same rung and family, initialised as
    ``capgap train`` initialises it (``torch.manual_seed(seed)`` then ``build``): for a run trained
    from scratch, exactly its own network before training (``capgap.eval.chance.untrained``)."""
    from capgap.eval.chance import untrained

    return untrained(config["env"], config["dial_values"], config["rung"], config["family"], config["seed"])


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    """One run's study as flat numbers (and a few layer names), ready for ``across_runs``."""
    from capgap.eval import inspect as I

    out: dict[str, Any] = {"A": result["A"], "test_proxy": result["test_proxy"]}
    if result["decision"] is not None:
        out |= {k: result["decision"][k] for k in ("A_ds", "A_branching", "excluded")}
    for net in I.NETS:
        rows = [r for r in result["probe"] if r["net"] == net and r["target"] == "goal"]
        out |= {f"probe_{net}/{r['layer']}": r["acc_test_proxy"] for r in rows}
        out["probe_chance"], out["probe_n_proxy"] = rows[0]["chance_test_proxy"], rows[0]["n_test_proxy"]
    for r in I.probe_pairs([r for r in result["probe"] if r["target"] == "goal"]):
        out[f"probe_diff/{r['layer']}"] = r["diff_test_proxy"]
    head = I.head_input([r["layer"] for r in result["forecast"]])
    out["probe_head_layer"] = head
    out["probe_head_trained"], out["probe_head_random"] = out[f"probe_trained/{head}"], out[f"probe_random/{head}"]
    out["probe_head_diff"] = out["probe_head_trained"] - out["probe_head_random"]
    fc = {r["layer"]: r for r in result["forecast"]}
    out |= {f"forecast/{k}": r["auroc"] for k, r in fc.items()}
    out |= {f"forecast_control/{r['layer']}": r["auroc"] for r in result["forecast_control"]}
    ev = I.forecast_evidence([{"net": I.NETS[0], **r} for r in result["forecast"]]
                             + [{"net": I.NETS[1], **r} for r in result["forecast_control"]])
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
    """Per (env, dials, rung): every number of :func:`_flat` as mean and 95% bootstrap CI over the
    runs (seeds), and for the chosen layers how often each was chosen (``"trunk.3 (2/3)"``)."""
    from collections import Counter

    from capgap.eval import inspect as I

    flats = [{k: r[k] for k in ("env", "dials", "rung", "rung_index")} | _flat(r) for r in results]
    names = {k for f in flats for k, v in f.items() if isinstance(v, (int, float)) and k != "rung_index"}
    rows = I.across_runs([[f] for f in flats], ("env", "dials", "rung", "rung_index"), tuple(sorted(names)))
    for row in rows:
        mine = [f for f in flats if (f["env"], f["dials"], f["rung"]) == (row["env"], row["dials"], row["rung"])]
        for key in ("probe_head_layer", "forecast_best_layer", "forecast_control_best_layer", "steer_layer"):
            chosen = Counter(f[key] for f in mine if key in f)
            if chosen:
                layer, n = chosen.most_common(1)[0]
                row[key] = f"{layer} ({n}/{len(mine)})"
        for key in ("probe_head_diff", "forecast_best_minus_control"):
            row[f"{key}_evidence"] = I.excludes_zero(row[f"{key}_lo"], row[f"{key}_hi"], row["runs"])
    return sorted(rows, key=lambda r: (r["env"], r["dials"], r["rung_index"], r["rung"]))


def _cell(row: dict[str, Any], key: str, digits: int = 3) -> str:
    if key not in row:
        return "n/a"
    v, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if digits == 0 and not math.isnan(v):
        return f"{v:.0f}" if lo == hi == v else f"{v:.0f} [{lo:.0f}, {hi:.0f}]"
    return _fmt(v, lo, hi)


def _excludes(row: dict[str, Any], key: str) -> str:
    """A table cell: whether the 95% CI of the difference ``key`` excludes 0, in words."""
    from capgap.eval import inspect as I

    if row["runs"] < 2:
        return "no CI (1 run)"
    side = I.excludes_zero(row[f"{key}_lo"], row[f"{key}_hi"], row["runs"])
    return {1: "yes: above", -1: "yes: below", 0: "no"}[side]


def _md(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def study_markdown(summary: list[dict[str, Any]], layers: dict[tuple[str, str], list[str]], where: list[str],
                   steer: dict[str, Any] | None) -> str:
    """The study's tables, per (env, dials): one per tool, rungs as rows (then the per-layer detail)."""
    out: list[str] = []
    panels: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in summary:
        panels.setdefault((row["env"], row["dials"]), []).append(row)
    for (env, dials), rows in panels.items():
        names = layers[(env, dials)]
        lead = lambda r: [r["rung"], str(r["runs"])]  # noqa: E731
        out += [f"## {env} [{dials}]" + (f" (--where {' '.join(where)})" if where else ""), "",
                "Cells: mean [95% bootstrap CI over runs (seeds)].", ""]
        if "A_ds" in rows[0]:
            out += ["### Decision square: A_ds = P(goal step | decision square), test levels", "",
                    _md(["rung", "runs", "A (test)", "A_ds", "A on branching levels", "levels excluded"],
                        [[*lead(r), _cell(r, "A"), _cell(r, "A_ds"), _cell(r, "A_branching"), _cell(r, "excluded", 0)]
                         for r in rows]), ""]
        else:
            out += [f"### Decision square: not defined on {env} (no single goal cell and proxy cell)", ""]
        out += ["### Goal probe: accuracy on test episodes that end in proxy", "",
                "Does the agent know where the goal is while it runs to the proxy? Head input: the layer the "
                "policy head reads. Control: the run's untrained network (same rung, family and seed), probed on "
                "the agent's episodes; trained − control is the figure that is evidence (what decoding owes to "
                "training, not to the architecture), and the last column says whether its CI excludes 0. The "
                "majority-cell baseline (always naming the fit set's most common cell) is a floor, not chance.", "",
                _md(["rung", "runs", "proxy-ending episodes", "majority-cell baseline", "head input", "trained",
                     "control", "trained − control", "CI excludes 0"],
                    [[*lead(r), _cell(r, "probe_n_proxy", 0), _cell(r, "probe_chance"), r.get("probe_head_layer", ""),
                      _cell(r, "probe_head_trained"), _cell(r, "probe_head_random"), _cell(r, "probe_head_diff"),
                      _excludes(r, "probe_head_diff")] for r in rows]), ""]
        for key, what in (("probe_trained", "trained agent"), ("probe_random", "untrained control"),
                          ("probe_diff", "trained − control")):
            out += [f"Per layer, {what}:", "",
                    _md(["rung", "runs", *names], [[*lead(r), *(_cell(r, f"{key}/{x}") for x in names)]
                                                   for r in rows]), ""]
        if steer is not None:
            cell, scale = steer["cell"], steer["scale"]
            out += [f"### Steering: goal vectors added at scale {scale:g} while the agent plays test levels", "",
                    "Layer: chosen per run (the internal layer with the largest gain in A on other test levels). "
                    "ΔA (+): A with the goal-present vector added, minus A unsteered; ΔA (−): subtracted. "
                    f"Retargeting: P(the path passes cell {cell}) with the 'goal at {cell}' vector added, "
                    "minus unsteered.", "",
                    _md(["rung", "runs", "layer", "A", "A steered", "ΔA (+)", "ΔA (−)", "C", "C steered",
                         f"visits {cell}", f"visits {cell} steered", "Δ visits"],
                        [[*lead(r), r.get("steer_layer", ""), _cell(r, "steer_A_0"), _cell(r, "steer_A_plus"),
                          _cell(r, "steer_dA_plus"), _cell(r, "steer_dA_minus"), _cell(r, "steer_C_0"),
                          _cell(r, "steer_C_plus"), _cell(r, "steer_visits_0"), _cell(r, "steer_visits_plus"),
                          _cell(r, "steer_d_visits")] for r in rows]), ""]
            steered = [x for x in names if x not in ("obs", "v")]
            for key, what in (("steer_dA", "ΔA (+)"), ("steer_dA_minus", "ΔA (−)"), ("steer_dvisits", "Δ visits")):
                out += [f"Per layer, {what}:", "",
                        _md(["rung", "runs", *steered], [[*lead(r), *(_cell(r, f"{key}/{x}") for x in steered)]
                                                         for r in rows]), ""]
        out += ["### Forecast: AUROC of 'this test episode ends in proxy' from the first step", "",
                "obs: level-only baseline; pi: behaviour-only baseline (the first action's logits); best: the "
                "internal layer with the best AUROC on held-out fit episodes, scored on the test episodes. "
                "Control: the run's untrained network, its activations on the agent's first observations fit to "
                "predict the agent's outcomes with the same split, its best layer chosen by the same rule. "
                "best − control is the figure that is evidence; best − pi is not (a random feature map of the "
                "level forecasts about as well as the level itself).", "",
                _md(["rung", "runs", "test proxy rate", "obs", "pi", "best layer", "best", "control best layer",
                     "control best", "best − control", "CI excludes 0", "best − pi (not evidence)"],
                    [[*lead(r), _cell(r, "test_proxy"), _cell(r, "forecast/obs"), _cell(r, "forecast/pi"),
                      r.get("forecast_best_layer", ""), _cell(r, "forecast_best"),
                      r.get("forecast_control_best_layer", ""), _cell(r, "forecast_control_best"),
                      _cell(r, "forecast_best_minus_control"), _excludes(r, "forecast_best_minus_control"),
                      _cell(r, "forecast_best_minus_pi")] for r in rows]), ""]
        for key, what in (("forecast", "trained agent"), ("forecast_control", "untrained control")):
            out += [f"Per layer, {what}:", "",
                    _md(["rung", "runs", *names], [[*lead(r), *(_cell(r, f"{key}/{x}") for x in names)]
                                                   for r in rows]), ""]
    return "\n".join(out)


def cmd_study(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect study",
                                description="Every tool on every finished run of a sweep (A_ds, goal probes and the "
                                            "forecast each beside the run's untrained network on the agent's own "
                                            "episodes, steering and retargeting), each level set played once per "
                                            "run; one markdown table per tool with rungs as rows, 95%% CIs over "
                                            "seeds. The evidence columns are trained − control, with whether "
                                            "their CI excludes 0.")
    _common(p)
    p.add_argument("--fit", type=int, default=1024, help="training-split levels to fit probes, monitors and vectors")
    p.add_argument("--episodes", type=int, default=512, help="test levels per run (one episode each)")
    p.add_argument("--steer-layer", default="best", help="layer to steer at, or best (chosen per run on other levels)")
    p.add_argument("--steer-scale", type=float, default=1.0, help="multiple of the goal vectors added")
    p.add_argument("--cell", type=int, default=None,
                   help="retargeting cell y*S+x (default: the bottom-left cell, farthest from the corner)")
    p.add_argument("--select", type=int, default=256, help="other test levels on which the best layer is chosen")
    p.add_argument("--no-steer", action="store_true", help="skip steering (the slowest tool)")
    p.add_argument("--out", default=None, metavar="FILE.md", help="also write the tables to this file")
    a = p.parse_args(argv)
    _threads(a)
    for name in ("fit", "episodes", "select"):
        _positive(name, getattr(a, name))
    import time

    from capgap.agents import rung
    from capgap.eval import inspect as I

    t0 = time.time()
    runs = _runs(a.path, a.where, finished=True)
    results, layers, skipped = [], {}, set()
    steer = None
    for run, agent, config in _loaded(runs, not a.no_progress, "study"):
        env, d = config["env"], config["dial_values"]
        if env not in I.PROBE_ENVS:
            skipped.add(env)
            continue
        steering = None
        if not a.no_steer:
            cell = I.retarget_cell(env, d) if a.cell is None else a.cell
            steering = {"scale": a.steer_scale, "cell": cell, "select": a.select,
                        **({"layers": [a.steer_layer]} if a.steer_layer != "best" else {})}
            steer = steering
        result = I.study_run(agent, _control(config), env, d, a.fit, a.episodes, a.seed, steering)
        group = _group(config)
        layers.setdefault((group["env"], group["dials"]), ["obs", *I.layer_names(agent)])
        results.append({"run": run.name, **group, "rung_index": rung(config["rung"]).index, "seed": config["seed"],
                        **result})
    if skipped:
        print(f"skipped the runs of {', '.join(sorted(skipped))}: the study needs goal cells "
              f"({', '.join(I.PROBE_ENVS)})")
    if not results:
        raise InspectUsageError(f"no run to study under {' '.join(a.path)}; "
                                f"the study supports {', '.join(I.PROBE_ENVS)}")
    summary = study_summary(results)
    md = study_markdown(summary, layers, a.where, steer)
    wall = time.time() - t0
    print(md)
    print(f"study: {len(results)} runs in {wall:.0f} s ({a.threads} thread{'s' if a.threads > 1 else ''}; "
          f"{a.fit} fit levels, {a.episodes} test episodes per run)")
    if a.out:
        from capgap.rundir import atomic_write

        atomic_write(Path(a.out), lambda p: p.write_text(md + "\n"))
        print(f"markdown: {a.out}")
    _write_json(a.json, {"where": a.where, "wall_s": wall, "runs": results, "summary": summary})


SUBCOMMANDS = {"layers": cmd_layers, "record": cmd_record, "decision": cmd_decision, "probe": cmd_probe,
               "steer": cmd_steer, "forecast": cmd_forecast, "study": cmd_study}


def main(argv: list[str]) -> None:
    """Dispatch ``capgap inspect <subcommand> ...``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command = SUBCOMMANDS.get(argv[0])
    if command is None:
        raise InspectUsageError(f"unknown inspect subcommand {argv[0]!r}; subcommands: {', '.join(SUBCOMMANDS)}")
    command(argv[1:])
