"""``capgap inspect``: look inside trained runs (the tools are in :mod:`capgap.eval.inspect`).

    capgap inspect layers RUN                       the layers that can be recorded, with their sizes
    capgap inspect record RUN --out acts.pt         activations on chosen levels of a split, saved as tensors
    capgap inspect decision PATH ... [--oracles]    decision-square alignment A_ds beside A, CIs over runs
    capgap inspect probe PATH ...                   goal/proxy probes per layer, CIs over runs
    capgap inspect steer RUN --layer L [--cell X]   add a goal vector during play: test A per scale
    capgap inspect forecast PATH ...                AUROC of "ends in proxy" monitors per layer, CIs over runs

PATH is a run dir or a sweep dir (every run under it); several runs of one rung are seeds, and
every number is reported as the mean and 95% bootstrap CI over them. ``--json FILE`` writes the
rows. See ``docs/inspect.md`` for a worked example.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from capgap.envs import CapgapError


class InspectUsageError(CapgapError, ValueError):
    """A bad ``capgap inspect`` command line."""


def _runs(paths: list[str]) -> list[Path]:
    from capgap.eval.evaluator import find_runs

    return [r for p in paths for r in find_runs(Path(p))]


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
    for run, agent, config in _loaded(_runs(a.path), not a.no_progress, "decision"):
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


def cmd_probe(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect probe",
                                description="Linear probes (closed-form ridge) that decode the goal's and the proxy's "
                                            "cell from each layer at an episode's first step: fit on training-split "
                                            "levels, scored on held-out levels of both splits.")
    _common(p)
    p.add_argument("--fit", type=int, default=2048, help="training-split levels to fit the probes on")
    p.add_argument("--episodes", type=int, default=512, help="held-out levels per split")
    p.add_argument("--target", default="goal", choices=("goal", "proxy", "both"))
    p.add_argument("--control", action="store_true",
                   help="also probe a randomly initialised network of the same rung (what decoding owes to training)")
    a = p.parse_args(argv)
    _threads(a)
    _positive("fit", a.fit)
    _positive("episodes", a.episodes)
    from capgap.agents import build
    from capgap.eval import inspect as I

    per_run: list[list[dict[str, Any]]] = []
    for run, agent, config in _loaded(_runs(a.path), not a.no_progress, "probe"):
        d = config["dial_values"]
        nets = [("trained", agent)]
        if a.control:
            import torch

            torch.manual_seed(config["seed"])
            nets.append(("random", build(config["env"], config["rung"], config["family"], **d).eval()))
        rows = []
        for net_name, net in nets:
            for r in I.probe_run(net, config["env"], d, a.fit, a.episodes, a.seed, progress=not a.no_progress):
                if a.target in ("both", r["target"]):
                    rows.append({"run": run.name, **_group(config), "net": net_name, **r})
        per_run.append(rows)
    values = tuple(f"{k}_{s}" for s in I.PROBE_SETS for k in ("acc", "chance"))
    summary = I.across_runs(per_run, ("env", "dials", "rung", "net", "target", "layer"), values)
    head = f"{'net':8s} {'target':6s} {'layer':18s} {'acc: test, ends in proxy':>34s} {'chance':>7s} " \
           f"{'acc: test':>8s} {'acc: train':>10s} {'chance':>7s}"
    last = None
    for s in summary:
        if (s["env"], s["dials"], s["rung"]) != last:
            last = (s["env"], s["dials"], s["rung"])
            print(f"\n{s['env']} [{s['dials']}] {s['rung']} ({s['runs']} runs; mean [95% CI over runs])\n{head}")
        print(f"{s['net']:8s} {s['target']:6s} {s['layer']:18s} "
              f"{_fmt(s['acc_test_proxy'], s['acc_test_proxy_lo'], s['acc_test_proxy_hi']):>34s} "
              f"{_fmt(s['chance_test_proxy']):>7s} {_fmt(s['acc_test']):>8s} {_fmt(s['acc_train']):>10s} "
              f"{_fmt(s['chance_test']):>7s}")
    _write_json(a.json, {"runs": per_run, "summary": summary})


def cmd_steer(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect steer",
                                description="Add a goal vector (mean activation difference) at a layer during play "
                                            "and measure test A per scale (scale 0: the unsteered agent).")
    _common(p, many=False)
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

    agent, config = I.load_agent(a.path)
    d = config["dial_values"]
    vec = I.goal_vector(agent, config["env"], d, a.layer, a.cell, a.fit, a.seed)
    rows = I.steering_effect(agent, config["env"], d, a.layer, vec, scales, a.episodes, a.seed, a.cell)
    kind = f"goal at cell {a.cell} vs elsewhere" if a.cell is not None else "goal present vs absent"
    print(f"{config['env']} {Path(a.path).name}: goal vector at {a.layer} ({kind}), "
          f"norm {float(vec.norm()):.3f}")
    for r in rows:
        extra = f"  visits cell {r['visits_cell']:.3f}" if "visits_cell" in r else ""
        print(f"  scale {r['scale']:+6.2f}: A {r['A']:.3f}  proxy {r['proxy']:.3f}  C {r['C']:.3f}{extra}")
    _write_json(a.json, rows)


def cmd_forecast(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap inspect forecast",
                                description="Forecast 'this test episode ends in proxy' from each layer at the first "
                                            "step: logistic monitors fit on training-split episodes, AUROC on test "
                                            "episodes; obs (the level) and pi (the first action) are baselines.")
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
    for run, agent, config in _loaded(_runs(a.path), not a.no_progress, "forecast"):
        rows = I.forecast_run(agent, config["env"], config["dial_values"], a.fit, a.episodes, a.seed,
                              shuffle=a.shuffle, progress=not a.no_progress)
        per_run.append([{"run": run.name, **_group(config), **r} for r in rows])
    summary = I.across_runs(per_run, ("env", "dials", "rung", "layer"), ("auroc", "base_rate_test"))
    last = None
    for s in summary:
        if (s["env"], s["dials"], s["rung"]) != last:
            last = (s["env"], s["dials"], s["rung"])
            print(f"\n{s['env']} [{s['dials']}] {s['rung']} ({s['runs']} runs; test proxy rate "
                  f"{s['base_rate_test']:.3f})\n{'layer':18s} {'AUROC':>26s}")
        print(f"{s['layer']:18s} {_fmt(s['auroc'], s['auroc_lo'], s['auroc_hi']):>26s}")
    _write_json(a.json, {"runs": per_run, "summary": summary})


SUBCOMMANDS = {"layers": cmd_layers, "record": cmd_record, "decision": cmd_decision, "probe": cmd_probe,
               "steer": cmd_steer, "forecast": cmd_forecast}


def main(argv: list[str]) -> None:
    """Dispatch ``capgap inspect <subcommand> ...``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command = SUBCOMMANDS.get(argv[0])
    if command is None:
        raise InspectUsageError(f"unknown inspect subcommand {argv[0]!r}; subcommands: {', '.join(SUBCOMMANDS)}")
    command(argv[1:])
