"""``capgap monitor``: the runtime monitor and escalation (the tools are :mod:`capgap.eval.monitor`
and :mod:`capgap.eval.escalate`; the guide is ``docs/monitor.md``).

    capgap monitor fit RUN --out FILE.pt          fit the monitors of a run's agent and save them
    capgap monitor eval PATH ... [--monitor F]    detection at 5% false alarms, warning time, calibration,
                                                  escalation (A with oversight vs help budget); per
                                                  rung: mean [95% CI] over seeds

Fitting sees ``--fit`` training-distribution episodes and at most ``--shifted`` labelled shifted
(test-split) episodes (``--shifted 0``: zero-shot, the anomaly detector only); evaluation plays
other levels. ``eval`` fits each run's monitors itself unless ``--monitor`` gives a fitted file
(one run). Nothing is written into a run dir unless ``fit --out`` points there.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from capgap.envs import UsageError


def _fit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default=None, help="layer the act monitor reads (default: the policy head's input)")
    p.add_argument("--fit", type=int, default=512, help="training-distribution episodes to fit on")
    p.add_argument("--shifted", type=int, default=32,
                   help="labelled shifted (test-split) episodes the fit may use (0 = zero-shot)")
    p.add_argument("--calib", type=int, default=256,
                   help="other training-distribution episodes that set the deployable threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of the action samples")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def _setup(a: argparse.Namespace) -> None:
    import torch

    for name in ("fit", "calib", "threads"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name} {getattr(a, name)} must be >= 1")
    if a.shifted < 0:
        raise UsageError(f"--shifted {a.shifted} must be >= 0 (0 = zero-shot)")
    torch.set_num_threads(a.threads)


def _fit(run: Path, a: argparse.Namespace, agent: Any, config: dict[str, Any]) -> tuple[Any, Any]:
    from capgap.eval import monitor as M
    from capgap.eval.inspect import run_control

    control = run_control(config)
    mset = M.fit(agent, config["env"], config["dial_values"], a.seed, a.layer, a.fit, a.shifted, a.calib,
                 control=control)
    return mset, control


def cmd_fit(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap monitor fit",
                                description="Fit the runtime monitors of a run's agent (act: a chosen layer; "
                                            "control: the untrained network's; pi: behaviour; obs: the screen; "
                                            "anomaly: zero-shot distance from training activations) and save them.")
    p.add_argument("run", help="a run dir")
    p.add_argument("--out", required=True, help="the monitor file to write (.pt)")
    _fit_flags(p)
    a = p.parse_args(argv)
    _setup(a)
    from capgap.eval import monitor as M
    from capgap.rundir import load_agent

    t0 = time.time()
    agent, config = load_agent(a.run)
    M.check_env(config["env"])
    mset, _ = _fit(Path(a.run), a, agent, config)
    mset.save(a.out)
    i = mset.info
    print(f"{Path(a.run).name}: fit on {a.fit} training-distribution episodes ({i['fit_proxy']:.3f} end in proxy) "
          f"and {a.shifted} labelled shifted ones ({i['shifted_proxy']:.3f} end in proxy): {i['rows']} steps, "
          f"{i['positives']} heading for the proxy; layer {mset.layer}")
    for name, mon in mset.monitors.items():
        what = ("not fit (no labelled positive: zero-shot)" if mon is None else
                f"{mon.kind:8s} on {mon.feature:8s} deployable threshold {mon.threshold:.3f} "
                f"({M.FA:.0%} of {a.calib} training-distribution episodes)")
        print(f"  {name:8s} {what}")
    print(f"monitor: {a.out} ({time.time() - t0:.1f} s)")


def _run_lines(name: str, ev: Any) -> list[str]:
    from capgap.eval.monitor import fmt

    i = ev.info
    lines = [f"{name}: test A {i['A']:.3f}, proxy {i['test_proxy']:.3f} ({i['test']} held-out test episodes; "
             f"fit: {i['fit_fit']} training-distribution + {i['fit_shifted']} labelled shifted), layer {i['layer']}",
             f"  {'monitor':8s} {'AUROC':>6s} {'detect':>7s} {'FA':>6s} {'warn':>5s} | {'deploy:':7s} {'detect':>6s} "
             f"{'FA train':>8s} {'FA test':>7s} | {'ECE':>6s}"]
    for r in ev.monitors:
        lines.append(f"  {r['monitor']:8s} {fmt(r['auroc']):>6s} {fmt(r['detect']):>7s} {fmt(r['fa']):>6s} "
                     f"{fmt(r['warning'], 1):>5s} | {'':7s} {fmt(r['detect_deploy']):>6s} "
                     f"{fmt(r['fa_deploy_train']):>8s} {fmt(r['fa_deploy_test']):>7s} | {fmt(r['ece']):>6s}")
    lines.append(f"  escalation (odd test episodes; A_agent {ev.figures.get('A_agent', math.nan):.3f}, "
                 f"A_oracle {ev.figures.get('A_oracle', math.nan):.3f}): A with oversight / help (episodes, steps) / "
                 "train-split false-alarm cost / random hand-over at that help")
    for mon in sorted({c["monitor"] for c in ev.escalation}):
        pts = [c for c in ev.escalation if c["monitor"] == mon]
        cells = [f"{'5%FA' if c['point'] == 'fa5' else format(c['budget'], '.2f')}: {c['A_oversight']:.3f} / "
                 f"{c['help']:.2f},{c['help_steps']:.2f} / {c['train_help']:.2f} / {c['A_random']:.3f}"
                 for c in pts if c["point"] == "fa5" or 0 < c["budget"] < 1]
        lines.append(f"  {mon:8s} " + "; ".join(cells))
    return lines


SUMMARY_KEYS = (("act/detect", "detect@5%FA act"), ("chance/detect", "detect chance"),
                ("act/warning", "warning act"), ("act/auroc", "AUROC act"), ("control/detect", "detect control"),
                ("pi/detect", "detect pi"), ("obs/detect", "detect obs"), ("anomaly/detect", "detect anomaly (0-shot)"),
                ("act/fa", "FA held-out act"), ("A_agent", "A agent"), ("act/A_oversight", "A oversight act"),
                ("act/A_random", "A random hand-over"), ("act/help", "help act"),
                ("act/train_help", "train FA cost act"), ("anomaly/A_oversight", "A oversight anomaly"))


def summary_markdown(rows: list[dict[str, Any]], budget: float) -> list[str]:
    """The per-rung table of :func:`capgap.eval.monitor.summary` rows: mean [95% CI] over seeds."""
    from capgap.eval.table import ci, markdown

    header = ["rung", "n", "learned", *(label for _, label in SUMMARY_KEYS)]
    body = [[r["rung"], r["n"], r["learned_mark"], *(ci(r.get(k, math.nan), r.get(f"{k}_lo", math.nan),
                                                          r.get(f"{k}_hi", math.nan), n=r["n"])
                                                       for k, _ in SUMMARY_KEYS)] for r in rows]
    title = f"per rung, mean [95% CI over seeds] (Student-t); help budget {budget:.2f} of test episodes"
    return [title, *markdown(header, body)]


def cmd_eval(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap monitor eval",
                                description="Evaluate runtime monitors on held-out levels: detection at 5%% false "
                                            "alarms (threshold set on other episodes than those measured), warning "
                                            "time, calibration, the deployable threshold's false alarms, and "
                                            "escalation: A with the scripted goal-seeker taking over at the first "
                                            "alarm, against the help budget. Per rung: mean [95%% CI] over seeds.")
    p.add_argument("path", nargs="+", help="run dirs or sweep dirs (runs of one rung are seeds)")
    p.add_argument("--monitor", default=None, help="a fitted monitor file (capgap monitor fit; one run only)")
    p.add_argument("--where", action="append", default=[], metavar="DIAL=V[,V...]",
                   help="only runs whose dial has one of these values (repeatable)")
    p.add_argument("--test", type=int, default=1024, help="held-out test episodes (half set thresholds, half scored)")
    p.add_argument("--fa-train", type=int, default=256, help="held-out training-distribution episodes")
    p.add_argument("--budget", type=float, default=0.25, help="the fixed help budget of the summary")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every figure as JSON")
    _fit_flags(p)
    a = p.parse_args(argv)
    _setup(a)
    if a.test < 4 or a.fa_train < 1:
        raise UsageError(f"--test {a.test} must be >= 4 and --fa-train {a.fa_train} >= 1")
    if not 0 < a.budget < 1:
        raise UsageError(f"--budget {a.budget} must be in (0, 1)")
    from tqdm import tqdm

    from capgap import rundir
    from capgap.eval import monitor as M
    from capgap.eval.inspect import run_control, run_group
    from capgap.train.inspect_cli import _runs

    t0 = time.time()
    runs = _runs(a.path, a.where, finished=True)
    if a.monitor and len(runs) > 1:
        raise UsageError(f"--monitor fits one run; {' '.join(a.path)} holds {len(runs)}")
    per_run = []
    for run in tqdm(runs, desc="monitor", unit="run", disable=a.no_progress or len(runs) < 2, dynamic_ncols=True):
        agent, config = rundir.load_agent(run)
        M.check_env(config["env"])
        if a.monitor:
            mset = M.MonitorSet.load(a.monitor)
            if mset.env_id != config["env"]:
                raise UsageError(f"{a.monitor} was fit on {mset.env_id}, not {config['env']}")
            control = run_control(config)
        else:
            mset, control = _fit(run, a, agent, config)
        ev = M.evaluate(agent, mset, a.test, a.fa_train, control=control, budget=a.budget,
                        progress=not a.no_progress and len(runs) == 1)
        for line in _run_lines(run.name, ev):
            print(line)
        done = json.loads((run / "done.json").read_text())
        per_run.append({"run": run.name, **run_group(config), "learned": done.get("learned"),
                        "figures": ev.figures, "info": ev.info, "monitors": ev.monitors, "escalation": ev.escalation})
    rows = M.summary(per_run)
    print()
    for line in summary_markdown(rows, a.budget):
        print(line)
    wall = time.time() - t0
    print(f"monitor eval: {len(runs)} runs in {wall:.0f} s ({a.threads} thread{'s' if a.threads > 1 else ''})")
    if a.json:
        rundir.write_json(Path(a.json), {"wall_s": wall, "runs": per_run, "summary": rows})
        print(f"json: {a.json}")


SUBCOMMANDS = {"fit": cmd_fit, "eval": cmd_eval}


def main(argv: list[str]) -> None:
    """Dispatch ``capgap monitor <subcommand> ...``."""
    from capgap.train.cli import dispatch

    dispatch("monitor", SUBCOMMANDS, __doc__ or "", argv)
