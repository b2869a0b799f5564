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
every number is reported as the mean and 95% CI (Student-t) over them. Probe and forecast figures
stand beside their control, the run's untrained network (``torch.manual_seed(seed)`` then
``build``, as ``capgap train`` initialises it) scored on the agent's own episodes and labels: a
figure is evidence only as its difference from the control, when that difference's CI excludes 0.
``--where DIAL=V[,V...]`` keeps the runs whose dial has one of those values (repeatable: all must
hold), e.g. ``--where p_disambiguate=0`` for the misgeneralising agents of a p_disambiguate sweep.
``--json FILE`` writes the rows. See ``docs/inspect.md`` for a worked example.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from capgap.envs import UsageError


def parse_where(specs: list[str]) -> dict[str, list[Any]]:
    """``["p_disambiguate=0,0.01"]`` -> ``{"p_disambiguate": [0, 0.01]}`` (values parsed as dials are)."""
    from capgap.envs import parse_dials

    where: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name.isidentifier() or not values.strip(", "):
            raise UsageError(f"malformed --where {spec!r}; write it as dial=value[,value...], "
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
            raise UsageError(f"none of the {len(runs)} runs under {' '.join(paths)} has finished "
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
        raise UsageError(f"--where {unknown[0]}: no run's env has that dial; "
                                "see capgap envs for each env's dials")
    if not kept:
        have = "; ".join(f"{n} in {{{', '.join(map(str, sorted(v, key=str)))}}}" for n, v in seen.items())
        raise UsageError(f"no run matches --where {' '.join(where or [])} (the runs have {have})")
    return kept


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line)


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
        raise UsageError(f"--threads {a.threads} must be >= 1")
    torch.set_num_threads(a.threads)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"--{name} {value} must be >= 1")


def _loaded(runs: list[Path], progress: bool, what: str) -> Any:
    from tqdm import tqdm

    from capgap.rundir import load_agent

    for run in tqdm(runs, desc=what, unit="run", disable=not progress or len(runs) < 2, dynamic_ncols=True):
        agent, config = load_agent(run)
        yield run, agent, config


def cmd_layers(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect layers", description="The layers of a run's network.")
    p.add_argument("path", help="a run dir")
    a = p.parse_args(argv)
    import torch

    from capgap.envs import make_core
    from capgap.eval import inspect as I
    from capgap.rundir import load_agent

    agent, config = load_agent(a.path)
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
    from capgap.rundir import load_agent

    agent, config = load_agent(a.path)
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
    from capgap.eval.inspect import render

    per_run: list[list[dict[str, Any]]] = []
    for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "decision"):
        rows = I.decision_of_run(run, agent, config, a.episodes, a.seed, a.oracles)
        _print(render.decision_lines(rows))
        per_run.append(rows)
    summary = I.decision_summary(per_run)
    print()
    _print(render.decision_summary_lines(summary))
    _write_json(a.json, {"runs": per_run, "summary": summary})


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
    from capgap.eval.inspect import render

    per_run = [I.probes_of_run(run, agent, config, a.fit, a.episodes, a.seed, a.target, progress=not a.no_progress)
               for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "probe")]
    summary = I.probe_summary(per_run)
    _print(render.probe_lines(summary))
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
        raise UsageError(f"malformed --scales {a.scales!r}; write numbers separated by commas, e.g. -1,0,1") \
            from None
    from capgap.eval import inspect as I
    from capgap.eval.inspect import render

    per_run = []
    kind = f"goal at cell {a.cell} vs elsewhere" if a.cell is not None else "goal present vs absent"
    for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "steer"):
        rows = I.steering_of_run(run, agent, config, a.layer, a.cell, scales, a.fit, a.episodes, a.seed)
        _print(render.steer_lines(rows, kind))
        per_run.append(rows)
    summary = I.steering_summary(per_run, cell=a.cell is not None)
    if len(per_run) > 1:
        _print(render.steer_summary_lines(summary, kind))
    _write_json(a.json, {"runs": per_run, "summary": summary})


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
    from capgap.eval.inspect import render

    per_run = [I.forecast_of_run(run, agent, config, a.fit, a.episodes, a.seed, a.shuffle, not a.no_progress)
               for run, agent, config in _loaded(_runs(a.path, a.where), not a.no_progress, "forecast")]
    layers, evidence = I.forecast_summary(per_run)
    _print(render.forecast_lines(layers, evidence))
    _write_json(a.json, {"runs": per_run, "summary": layers, "evidence": evidence})


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

    from capgap.eval import inspect as I

    t0 = time.time()
    runs = _runs(a.path, a.where, finished=True)
    steering = None if a.no_steer else {"scale": a.steer_scale, "cell": a.cell, "select": a.select,
                                        "layer": a.steer_layer}
    study = I.Study(a.fit, a.episodes, a.seed, steering)
    for run, agent, config in _loaded(runs, not a.no_progress, "study"):
        study.add(run, agent, config)
    if study.skipped:
        print(f"skipped the runs of {', '.join(sorted(study.skipped))}: the study needs goal cells "
              f"({', '.join(I.probe_envs())})")
    if not study.results:
        raise UsageError(f"no run to study under {' '.join(a.path)}; "
                                f"the study supports {', '.join(I.probe_envs())}")
    summary = study.summary()
    md = I.study_markdown(summary, study.layers, a.where, study.steer)
    wall = time.time() - t0
    print(md)
    print(f"study: {len(study.results)} runs in {wall:.0f} s ({a.threads} thread{'s' if a.threads > 1 else ''}; "
          f"{a.fit} fit levels, {a.episodes} test episodes per run)")
    if a.out:
        from capgap.rundir import atomic_write

        atomic_write(Path(a.out), lambda p: p.write_text(md + "\n"))
        print(f"markdown: {a.out}")
    _write_json(a.json, {"where": a.where, "wall_s": wall, "runs": study.results, "summary": summary})


SUBCOMMANDS = {"layers": cmd_layers, "record": cmd_record, "decision": cmd_decision, "probe": cmd_probe,
               "steer": cmd_steer, "forecast": cmd_forecast, "study": cmd_study}


def main(argv: list[str]) -> None:
    """Dispatch ``capgap inspect <subcommand> ...``."""
    from capgap.train.cli import dispatch

    dispatch("inspect", SUBCOMMANDS, __doc__ or "", argv)
