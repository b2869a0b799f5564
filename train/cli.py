"""The ``capgap`` command: one entry point, one subcommand per job.

    capgap envs                       list the registered envs and their dials
    capgap show <env> [--split test]  print a level as text (--steps N: and N steps of it)
    capgap certify [<env> ...]        run the oracle validity certificate
    capgap rungs [--env <id>]         the network ladder's rungs with exact parameter counts (alias: sizes)
    capgap train [--env ...] [--rung ...] [--seed ...] [--total-steps ...]   one PPO run
    capgap sweep --rungs 0..3 --seeds 0..2 [--grid p_disambiguate=0,0.1] --out DIR [train flags]
    capgap eval DIR [--episodes 512]  evaluate every checkpoint of a run or sweep, both splits
    capgap report DIR                 metrics with CIs over seeds: tables, plots, TensorBoard
    capgap pack DIR DEST              a study's finished runs without their weights (~50x smaller): to commit,
                                      report, or copy back and resume after a wipe
    capgap scaling --out DIR          the scaling study: every env, nano..large, trained to competence
    capgap inspect <what> RUN ...     look inside runs: layers, record, decision, probe, steer, forecast
    capgap redteam RUN_OR_SWEEP ...   search levels where a trained agent fails and the goal-seeker does not
    capgap monitor fit|eval RUN ...   runtime monitor: alarms before the proxy, escalation to an overseer
    capgap oversight STUDY --out DIR  red team + monitor on every run of a scaling study: oversight against size

Bad input ends in one line on stderr (``capgap: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from capgap import envs as E
from capgap.agents import FAMILIES
from capgap.envs import CapgapError, UsageError, parse_dials


def cmd_envs(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap envs", description="List the registered envs, their dials and what "
                                "chance scores on them (capgap.eval.chance).")
    p.add_argument("env", nargs="*", help="env ids (default: every registered env)")
    p.add_argument("--no-chance", action="store_true", help="skip the chance baselines (seconds per env)")
    p.add_argument("--rung", default="small", help="rung of the untrained-network baseline (default: small)")
    a = p.parse_args(argv)
    for env_id in a.env:
        E.task_class(env_id)
    from capgap.agents import rung

    rung(a.rung)  # a bad rung is one line before anything is printed
    for env_id in a.env or list(E.TASKS):
        print("\n".join(E.describe(env_id)), flush=True)
        if not a.no_chance:
            from capgap.eval import chance

            print("\n".join("  " + line for line in chance.describe(env_id, rung=a.rung)), flush=True)


def cmd_show(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap show", description="Print a level of an env as text.")
    p.add_argument("env", nargs="?", help="registered env id, e.g. capgap/CheeseCorner-v0")
    p.add_argument("--level", metavar="FILE", help="a level saved by capgap redteam: replay its agent on it and draw "
                                                    "the path")
    p.add_argument("--png", metavar="FILE", help="with --level: also write the trajectory picture there")
    p.add_argument("--split", default="train", choices=E.SPLITS)
    p.add_argument("--seed", type=int, default=0, help="env seed (picks the level)")
    p.add_argument("--dials", nargs="+", default=[], metavar="NAME=VALUE", help="set dials, e.g. --dials size=9")
    p.add_argument("--steps", type=int, default=0, metavar="N",
                   help="then play N steps of the scripted goal-seeker, printing each (moving things: a leader's "
                        "trail, monsters)")
    a = p.parse_args(argv)
    if a.steps < 0:
        raise UsageError(f"--steps={a.steps} is out of range; expected an integer >= 0")
    if a.level:
        from capgap.eval.redteam import show_level

        print(show_level(a.level, a.png))
        return
    if a.env is None:
        raise UsageError("capgap show needs an env id (or --level FILE)")
    from capgap.envs import oracle

    for frame in oracle.show(a.env, a.split, a.seed, a.steps, **parse_dials(a.dials)):
        print(frame)


def cmd_certify(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap certify", allow_abbrev=False,
                                description="Run the oracle validity certificate (scripted agents), or with "
                                            "--learned the learned one (trained agents, see capgap.train.certificate).")
    p.add_argument("env", nargs="*", help="env ids (default: every registered env)")
    p.add_argument("--levels", type=int, default=500, help="oracle: seeded levels per split")
    p.add_argument("--seed", type=int, default=0, help="oracle: seed of the levels")
    p.add_argument("--learned", action="store_true", help="train agents and certify what they learned")
    p.add_argument("--out", default="sweeps/certificate", help="learned: sweep dir (rerun to resume)")
    p.add_argument("--seeds", default="0..2", help="learned: training seeds (>= 3 for a claim)")
    p.add_argument("--rungs", default=None, help="learned: ladder rungs (default: the default rung)")
    p.add_argument("--workers", type=int, default=0, help="learned: local worker processes (0 = one per core)")
    p.add_argument("--no-progress", action="store_true")
    a, rest = p.parse_known_args(argv)
    for env_id in a.env:
        E.task_class(env_id)
    if a.learned:
        _certify_learned(a, rest)
        return
    if rest:
        raise UsageError(f"unrecognised argument {rest[0]!r} (training flags go with --learned)")
    from capgap.envs import oracle
    from capgap.eval import chance

    failed = 0
    for env_id in a.env or list(E.TASKS):
        for c in oracle.certify(env_id, a.levels, a.seed):
            failed += not c.ok
            print(f"{env_id:26s} {c.name:44s} {c.value:6.3f}  want {c.bound:7s} {'ok' if c.ok else 'FAIL'}")
        print("\n".join(f"{env_id:26s} {line}" for line in chance.describe(env_id)), flush=True)
    if failed:
        raise SystemExit(1)


def _certify_learned(a: argparse.Namespace, rest: list[str]) -> None:
    from pathlib import Path

    import tyro

    from capgap.train import certificate
    from capgap.train.ppo import Args
    from capgap.train.sweep import parse_range, parse_seeds

    clash = [f for f in rest if f.split("=")[0] in ("--env", "--rung", "--seed", "--out", "--name", "--dials")]
    if clash:
        raise UsageError(f"{clash[0]} is not a certificate flag: it trains each env at its default dials, "
                         "with --rungs/--seeds/--out")
    base = tyro.cli(Args, args=rest, prog="capgap certify --learned [train flags]")
    seeds = parse_seeds(a.seeds)
    rungs = parse_range(a.rungs, "rung") if a.rungs else [base.rung]
    res = certificate.run(a.env or list(E.TASKS), rungs, seeds, Path(a.out), base,
                          a.workers, progress=not a.no_progress)
    print((Path(a.out) / "certificate.md").read_text())
    if not all(r.ok for r in res):
        raise SystemExit(1)


def cmd_rungs(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="capgap rungs", description="Print the network ladder's rungs with parameter "
                                "counts (the env's grid side is the dial size, e.g. --dials size=13).")
    p.add_argument("--env", default=E.DEFAULT_ENV)
    p.add_argument("--family", default="conv", choices=FAMILIES)
    p.add_argument("--dials", nargs="+", default=[], metavar="NAME=VALUE", help="set dials, e.g. --dials size=13")
    a = p.parse_args(argv)
    from capgap.agents import ladder_table

    print(f"{a.env} ({a.family}; width multiplier m at fixed depth)")
    print(f"{'index':>5}  {'name':6}  {'m':>3}  {'parameters':>12}")
    for i, name, m, n in ladder_table(a.env, a.family, **parse_dials(a.dials)):
        print(f"{i:>5}  {name:6}  {m:>3}  {n:>12,}")


def cmd_train(argv: list[str]) -> None:
    import tyro

    from capgap.train.ppo import Args, train

    if any(f.split("=")[0] == "--size" for f in argv):
        raise UsageError("--size is now --rung (the network's ladder rung); the grid side is the dial size, "
                         "e.g. --dials size=13")
    args = tyro.cli(Args, args=argv, prog="capgap train",
                    description="Train one PPO run (see capgap.train.ppo). Re-run the same command to resume a "
                                "killed or interrupted run. --threads defaults to 1, the fastest when other work "
                                "shares the machine (with one of two cores busy, two threads ran 26x slower).")
    run_dir = train(args)  # validates args first: nothing is written for a bad one
    print(f"run: {run_dir}\nview: tensorboard --logdir {run_dir.parent}")


def cmd_sweep(argv: list[str]) -> None:
    import os
    from pathlib import Path

    import tyro

    from capgap.train.ppo import Args
    from capgap.train.sweep import (
        Sweep,
        describe_estimate,
        estimate,
        parse_grid,
        parse_range,
        parse_seeds,
        run_sweep,
        validate,
    )

    p = argparse.ArgumentParser(prog="capgap sweep", description="Train every trial of a grid (resumable).",
                                allow_abbrev=False,
                                epilog="Other flags (--total-steps, --dials size=9, --lr, ...) go to every trial's "
                                       "capgap train; see capgap train --help.")
    p.add_argument("--env", nargs="+", default=[E.DEFAULT_ENV], help="env ids")
    p.add_argument("--rungs", default="0..3", help="ladder rungs: 0..3, 0,2,5 or names")
    p.add_argument("--seeds", default="0..2", help="seeds: 0..4 or 0,1,7")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="sweep an env dial, or num_levels, repair_levels or sampler, over values (repeatable: "
                        "the grid is their product); "
                        "--dials NAME=VALUE sets a dial for every trial")
    p.add_argument("--init-where", nargs="+", default=[], metavar="NAME=VALUE",
                   help="with --init-from SWEEP_DIR (a repair sweep): the dials of the runs to start from")
    p.add_argument("--out", required=True, help="sweep directory (rerun the same command to resume)")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--workers", type=int, default=0, help="local worker processes (0 = one per core)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per worker (0 = the cores shared out among the workers); use 1 when other "
                        "work shares the machine: threads waiting for a busy core slow a run several-fold")
    p.add_argument("--address", default=None, help="Ray cluster address (ray backend; none = a local instance)")
    p.add_argument("--no-group", action="store_true",
                   help="train every seed in a process of its own (default: the seeds of a small rung train "
                        "together as one batched computation; see capgap.train.sweep.plan)")
    p.add_argument("--dry-run", action="store_true", help="print the cost estimate and stop")
    p.add_argument("--no-progress", action="store_true")
    a, rest = p.parse_known_args(argv)
    if any(f.split("=")[0] in ("--sizes", "--size") for f in rest):
        raise UsageError("the ladder rungs are --rungs now (--sizes was renamed); the grid side is the dial size")
    clash = [f for f in rest if f.split("=")[0] in ("--env", "--rung", "--seed", "--out", "--name")]
    if clash:
        raise UsageError(f"{clash[0]} is set per trial by the sweep; use --env/--rungs/--seeds/--out instead")
    base = tyro.cli(Args, args=rest, prog="capgap sweep [train flags]")
    sweep = Sweep(envs=a.env, rungs=parse_range(a.rungs, "rung"), seeds=parse_seeds(a.seeds),
                  grid=parse_grid(a.grid), base=base, out=Path(a.out), init_where=tuple(a.init_where))
    validate(sweep)  # one line for a bad grid, before the estimate
    workers = a.workers or os.cpu_count() or 1
    print(describe_estimate(estimate([sweep], workers, group=not a.no_group), workers), flush=True)
    if a.dry_run:
        return
    t0 = time.time()
    run_sweep(sweep, a.backend, a.workers, a.address, progress=not a.no_progress, group=not a.no_group,
              threads=a.threads)
    print(f"sweep: {len(sweep.trials())} trials in {sweep.out} ({time.time() - t0:.0f} s, {os.cpu_count()} cores)")
    print(f"next:  capgap eval {sweep.out} && capgap report {sweep.out}")


def cmd_eval(argv: list[str]) -> None:
    from pathlib import Path

    from capgap.train.sweep import evaluate_all

    p = argparse.ArgumentParser(prog="capgap eval", description="Evaluate every checkpoint on both splits.")
    p.add_argument("path", help="a run dir or a sweep dir")
    p.add_argument("--episodes", type=int, default=512, help="episodes (fresh levels) per split per checkpoint")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = one per core)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (1, the default, is fastest when other work shares the machine)")
    p.add_argument("--inspect", action="store_true",
                   help="also inspect every checkpoint of finished runs (inspect.jsonl, as capgap train --inspect)")
    a = p.parse_args(argv)
    if a.episodes < 1:
        raise UsageError(f"--episodes {a.episodes} must be >= 1")
    if a.workers < 0:
        raise UsageError(f"--workers {a.workers} must be >= 0 (0 = one per core)")
    if a.threads < 1:
        raise UsageError(f"--threads {a.threads}: give a thread count >= 1")
    runs, evaluated, inspected = evaluate_all(Path(a.path), a.episodes, a.workers, a.inspect, threads=a.threads)
    print(f"eval: {runs} runs, {evaluated} checkpoints evaluated now ({a.episodes} episodes per split)"
          + (f", {inspected} inspected" if a.inspect else ""))


def cmd_report(argv: list[str]) -> None:
    from capgap.eval import report

    p = argparse.ArgumentParser(prog="capgap report", description="Metrics with CIs over seeds, tables and plots.")
    p.add_argument("path", nargs="+", help="a sweep dir (or a run dir); several are reported together")
    p.add_argument("--out", default=None, help="report dir (default: <first path>/report)")
    p.add_argument("--no-untrained", action="store_true",
                   help="skip the untrained-network baseline (3 init seeds per rung evaluated: seconds per rung); "
                        "the uniform-random baseline and the calibrated scores are always computed")
    a = p.parse_args(argv)
    text, written, out = report.build(a.path, a.out, untrained=not a.no_untrained)
    print(text)
    print()
    for name, path in written.items():
        print(f"{name}: {path}")
    print(f"view:  tensorboard --logdir {out / 'tensorboard'}")


def cmd_pack(argv: list[str]) -> None:
    from capgap.rundir import pack

    p = argparse.ArgumentParser(
        prog="capgap pack", description="Copy a study's finished runs, leaving out checkpoints and compressing "
        "episode records and TensorBoard scalars (scalars.jsonl.xz) with xz: small enough to commit (results/), "
        "read by capgap report as the study is, and copied back (capgap pack results/NAME sweeps/NAME) a wiped "
        "study resumes where it stopped. Incremental: runs already packed are skipped.")
    p.add_argument("src", help="a sweep dir, a scaling study dir or a run dir")
    p.add_argument("dest", help="where the packed copy goes (created; e.g. results/NAME)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    out = pack.pack(a.src, a.dest, progress=not a.no_progress)
    mb = 1 / 2**20
    print(f"packed {out.packed} finished runs into {a.dest} ({out.bytes_in * mb:.1f} MB -> {out.bytes_out * mb:.1f} MB)"
          f"; {out.unchanged} already there; {out.unfinished} unfinished left out"
          + (" (rerun the study's command to finish them, then pack again)" if out.unfinished else ""))


def cmd_inspect(argv: list[str]) -> None:
    from capgap.train.inspect_cli import main as inspect_main

    inspect_main(argv)


def cmd_monitor(argv: list[str]) -> None:
    from capgap.train.monitor_cli import main as monitor_main

    monitor_main(argv)


def cmd_scaling(argv: list[str]) -> None:
    from pathlib import Path

    from capgap.train import scaling
    from capgap.train.sweep import parse_range

    p = argparse.ArgumentParser(prog="capgap scaling", allow_abbrev=False,
                                description="The scaling study: every env, rungs nano..large, each agent trained "
                                            "to competence; C, A and the gap against parameters, slopes and "
                                            "verdicts (capgap.train.scaling). Resumable: rerun to go on.")
    p.add_argument("--out", default="sweeps/scaling", help="study dir (rerun the same command to resume)")
    p.add_argument("--envs", nargs="*", default=None, help="env ids (default: every registered env)")
    p.add_argument("--rungs", default=None, help="ladder rungs, e.g. 0..3 or nano,small (default: nano..large)")
    p.add_argument("--workers", type=int, default=0, help="local worker processes (0 = one per core)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--dials", nargs="*", default=[], metavar="NAME=VALUE",
                   help="env dials for every env of the study (an axis with headroom, e.g. size=13)")
    p.add_argument("--dry-run", action="store_true", help="print the cost estimate and stop")
    p.add_argument("--report-only", action="store_true", help="write the report from what has finished; train nothing")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    for env_id in a.envs or []:
        E.task_class(env_id)
    if a.workers < 0 or a.threads < 1:
        raise UsageError("--workers must be >= 0 (0 = one per core) and --threads >= 1")
    rungs = parse_range(a.rungs, "rung") if a.rungs else None
    from capgap.train.ppo import Args

    base = Args(dials=tuple(a.dials))
    print(scaling.run(Path(a.out), a.envs, rungs, base=base, workers=a.workers, threads=a.threads, dry_run=a.dry_run,
                      report_only=a.report_only, progress=not a.no_progress))


def cmd_redteam(argv: list[str]) -> None:
    import torch

    from capgap.eval import redteam

    p = argparse.ArgumentParser(prog="capgap redteam", allow_abbrev=False,
                                description="Search level space for failures of trained agents: levels where the "
                                            "agent misses the goal and the scripted goal-seeker reaches it "
                                            "(capgap.eval.redteam, docs/oversight.md).")
    p.add_argument("path", nargs="+", help="run dirs or sweep dirs (every run under them)")
    p.add_argument("--budget", type=int, default=256, help="queries (agent episodes) per searcher per split")
    p.add_argument("--splits", nargs="+", default=["test", "train"], help="splits to search")
    p.add_argument("--methods", nargs="+", default=list(redteam.METHODS), help="searchers: random, guided")
    p.add_argument("--fitness", default="regret", help="what the guided search climbs: regret, value or distance")
    p.add_argument("--search-dials", nargs="*", default=[], metavar="NAME=V1,V2",
                   help="dials to search over too, e.g. corner_size=1,2,3 (must keep the observation's shape)")
    p.add_argument("--batch", type=int, default=32, help="queries played at once (a guided generation)")
    p.add_argument("--keep", type=int, default=8, help="failing levels saved (and replayed) per search")
    p.add_argument("--replays", type=int, default=16, help="episodes per kept level for its A (the worst-case A)")
    p.add_argument("--seed", type=int, default=0, help="search seed (levels, mutations, action keys)")
    p.add_argument("--out", default=None, help="output dir (default: PATH/redteam)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads < 1:
        raise UsageError(f"--threads {a.threads} must be >= 1")
    torch.set_num_threads(a.threads)
    space = {}
    for name, values in parse_dials(a.search_dials).items():
        space[name] = list(values) if isinstance(values, tuple) else [values]
    redteam.check(budget=a.budget, batch=a.batch, keep=a.keep, replays=a.replays, fitness=a.fitness,
                  splits=a.splits, methods=a.methods)
    start = time.time()
    _, text = redteam.redteam_path(a.path, a.out, progress=not a.no_progress, budget=a.budget,
                                   splits=tuple(a.splits), methods=tuple(a.methods), seed=a.seed, batch=a.batch,
                                   fitness=a.fitness, dial_space=space or None, keep=a.keep, replays=a.replays)
    print(text)
    print(f"redteam: {time.time() - start:.0f} s; files: {a.out or a.path[0].rstrip('/') + '/redteam'}")


def dispatch(name: str, subcommands: dict[str, Callable[[list[str]], None]], doc: str, argv: list[str]) -> None:
    """Run ``capgap <name> <subcommand> ...``: its help (``doc``) without one, one line for an unknown one."""
    if not argv or argv[0] in ("-h", "--help"):
        print(doc)
        return
    command = subcommands.get(argv[0])
    if command is None:
        raise UsageError(f"unknown {name} subcommand {argv[0]!r}; subcommands: {', '.join(subcommands)}")
    command(argv[1:])


def cmd_oversight(argv: list[str]) -> None:
    import torch

    from capgap.eval import oversight as O

    d = O.Settings()
    p = argparse.ArgumentParser(prog="capgap oversight", allow_abbrev=False,
                                description="Oversight against size (issue 23 §4): on every finished run under PATH "
                                            "(a scaling study, an env's dir, a sweep or a run), the red team (random "
                                            "and guided, both splits) and the runtime monitor with escalation at a "
                                            "fixed help budget; per rung mean [95% CI] over learned seeds, slopes "
                                            "against log10(params), a figure (capgap.eval.oversight, "
                                            "docs/oversight.md). Resumable: each run is cached under --out.")
    p.add_argument("path", nargs="+", help="scaling study, env, sweep or run dirs")
    p.add_argument("--out", required=True, help="output dir: per-run cache, oversight.md/.json/_<env>.png")
    p.add_argument("--envs", nargs="*", default=None, help="only these env ids (default: every env with a proxy)")
    p.add_argument("--queries", type=int, default=d.queries, help="red team: queries per searcher per split")
    p.add_argument("--batch", type=int, default=d.batch, help="red team: queries played at once")
    p.add_argument("--fitness", default=d.fitness, help="red team: what the guided search climbs")
    p.add_argument("--keep", type=int, default=d.keep, help="red team: failing levels saved and replayed per search")
    p.add_argument("--replays", type=int, default=d.replays, help="red team: episodes per kept level (worst A)")
    p.add_argument("--search-seed", type=int, default=d.search_seed, help="red team: search seed")
    p.add_argument("--fit", type=int, default=d.fit, help="monitor: training-distribution episodes to fit on")
    p.add_argument("--shifted", type=int, default=d.shifted, help="monitor: labelled shifted episodes to fit on")
    p.add_argument("--calib", type=int, default=d.calib, help="monitor: episodes setting the deployable threshold")
    p.add_argument("--test", type=int, default=d.test, help="monitor: held-out test episodes")
    p.add_argument("--fa-train", type=int, default=d.fa_train, help="monitor: held-out training-distribution episodes")
    p.add_argument("--help-budget", type=float, default=d.help_budget,
                   help="escalation: the fixed fraction of test episodes the overseer may take over")
    p.add_argument("--layer", default=d.layer, help="monitor: layer the act monitor reads (default: head input)")
    p.add_argument("--monitor-seed", type=int, default=d.monitor_seed, help="monitor: seed of the action samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    a = p.parse_args(argv)
    if a.threads < 1:
        raise UsageError(f"--threads {a.threads} must be >= 1")
    torch.set_num_threads(a.threads)
    settings = O.Settings(queries=a.queries, batch=a.batch, fitness=a.fitness, keep=a.keep, replays=a.replays,
                          search_seed=a.search_seed, fit=a.fit, shifted=a.shifted, calib=a.calib, test=a.test,
                          fa_train=a.fa_train, help_budget=a.help_budget, layer=a.layer, monitor_seed=a.monitor_seed)
    _, text = O.study(a.path, a.out, settings, a.envs, log=lambda line: print(line, flush=True))
    print(text)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "envs": cmd_envs, "show": cmd_show, "certify": cmd_certify, "rungs": cmd_rungs, "train": cmd_train,
    "sweep": cmd_sweep, "eval": cmd_eval, "report": cmd_report, "inspect": cmd_inspect, "scaling": cmd_scaling,
    "pack": cmd_pack,
    "redteam": cmd_redteam,
    "monitor": cmd_monitor,
    "oversight": cmd_oversight,
}
ALIASES: dict[str, str] = {"sizes": "rungs"}
"""Old command names that still work."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command = COMMANDS.get(ALIASES.get(argv[0], argv[0]))
    try:
        if command is None:
            raise UsageError(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}")
        if any(f.split("=")[0] == "--dial" for f in argv):
            raise UsageError("--dial is gone: set dials with --dials NAME=VALUE ... (e.g. --dials size=9); "
                             "sweep one with capgap sweep --grid NAME=V1,V2")
        command(argv[1:])
    except CapgapError as err:
        print(f"capgap: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("capgap: error: interrupted; re-run the same command to resume where it stopped", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
