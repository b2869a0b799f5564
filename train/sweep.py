"""Sweeps: every (env, rung, dial values, seed) trial of a grid, each one ``train`` run.

    capgap sweep --env capgap/CheeseCorner-v0 --rungs 0..5 --seeds 0..4 \\
        --grid p_disambiguate=0,0.02,0.1 --out sweeps/corner --total-steps 2_000_000

The grid (``--grid NAME=V1,V2``, repeatable) runs over env dials and over the training settings
``TRAIN_AXES``: ``num_levels`` (a fixed set of training levels), ``repair_levels`` (the repair mix) and
``sampler`` (``dr``, ``plr``, ``plr-oracle``: a ``dr`` arm ignores the PLR settings the others share),
e.g. ``--grid p_disambiguate=0,0.001,0.01,0.1 --grid sampler=dr,plr-oracle``. A **repair sweep**
fine-tunes the finished runs of another sweep: ``--init-from SWEEP_DIR`` starts each trial from the
run there of the same env, rung, family and seed (``--init-where p_disambiguate=0`` picks among
several). The repair recipe of k*(N) mixes k disambiguating levels into the original distribution
(half the episodes each, so the task stays in view)::

    capgap sweep --env capgap/CheeseCorner-v0 --rungs 0..3 --seeds 0..2 --out sweeps/repair \\
        --init-from sweeps/corner --init-where p_disambiguate=0 \\
        --grid repair_levels=1,10,100,1000 --total-steps 250_000

The older recipe, fine-tuning on the k disambiguating levels alone (``--grid num_levels=1,10,100,1000
--dials p_disambiguate=1``), is kept as an arm: it unlearns the original task by construction.

Flags the sweep does not know pass through to every trial's ``capgap train`` (``--total-steps``,
``--dials size=9``, ``--lr``, ``--until-learned``...). Trials land in ``<out>/runs/<run name>``, named so
TensorBoard's run filter works (env, rung, dials, seed).

Jobs (:func:`plan`): the seeds of one trial configuration at a small rung (up to
``GROUP_MAX_PARAMS``) train as one batched group in one process (``train_seeds``: 1.8-2.1x the
env-steps/s of one seed per process at nano..tiny); every other trial is a job of its own; the
longest jobs start first. ``--no-group``: every seed alone.

Backends run the very same job function (:func:`run_trials`):

* ``local`` (default): one process per worker, ``--workers`` defaulting to the machine's cores,
  each with ``cores // workers`` torch threads so they never oversubscribe the CPU;
* ``ray``: a Ray cluster (``--address auto`` or ``ray://host:port``; none = a local instance),
  for sweeps that outgrow one machine. ``pip install 'capgap[ray]'``.

Resumable: a trial is finished when its ``done.json`` exists (written atomically, last);
re-running a killed sweep trains only what is missing, resuming interrupted trials from their
last checkpoint. A run dir is locked while trained, and local workers exit with their parent,
so no trial ever runs twice at once.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capgap import rundir
from capgap.agents import build, rung
from capgap.envs import CapgapError, DialError, parse_dials, task_class
from capgap.rundir import RunError
from capgap.train import seeds
from capgap.train.ppo import Args, check_args, config_of, train_seeds, with_budget
from capgap.train.samplers import PLR_SETTINGS, SAMPLERS


@dataclass
class Sweep:
    """A grid of trials over a base training config."""

    envs: list[str]
    rungs: list[str]
    """Ladder rungs (names or indices)."""
    seeds: list[int]
    grid: dict[str, list[str]]
    """Dial name -> values as written (``"0.1"``); trials take the cartesian product. Each trial's
    ``capgap train`` parses its dials, once, like any run's."""
    base: Args
    """Training config shared by every trial (its env, rung, seed and out are overridden). A
    ``base.init_from`` that is a sweep dir (or a dir of runs) makes this a repair sweep: see
    :func:`source_run`."""
    out: Path
    init_where: tuple[str, ...] = ()
    """``name=value`` dials that the source run of a repair sweep's trial must have."""

    def trials(self) -> list[Args]:
        names = list(self.grid)
        out = []
        for env, rung_, values, seed in itertools.product(self.envs, self.rungs, itertools.product(
                *self.grid.values()), self.seeds):
            point = dict(zip(names, values, strict=True))
            settings = {k: _setting(k, point.pop(k)) for k in TRAIN_AXES if k in point}
            swept = {**{d.partition("=")[0]: d for d in self.base.dials},
                     **{name: f"{name}={v}" for name, v in point.items()}}
            dials = tuple(swept[k] for k in sorted(swept))
            if settings.get("sampler") == "dr":  # the baseline arm: PLR's settings are the others'
                settings |= {k: getattr(Args, k) for k in PLR_SETTINGS}
            trial = with_budget(dataclasses.replace(self.base, env=env, rung=rung_, seed=seed, dials=dials,
                                                    out=str(self.out / "runs"), progress=False, name="", **settings))
            if self.repairs():
                trial = dataclasses.replace(trial, init_from=str(source_run(Path(self.base.init_from), trial,
                                                                            self.init_where)))
            out.append(trial)
        return out

    def repairs(self) -> bool:
        """Whether the trials fine-tune the runs of another sweep (``base.init_from`` is not one run)."""
        src = Path(self.base.init_from) if self.base.init_from else None
        return src is not None and src.is_dir() and not (src / "config.json").exists()

    def config(self) -> dict[str, Any]:
        base = config_of(self.base)
        for k in ("env", "rung", "seed", "out", "progress", "name", "threads", "inspect"):
            base.pop(k)  # set per trial, or not part of what the sweep trains
        extra = {"init_where": list(self.init_where)} if self.init_where else {}
        rungs = [rung(r).name for r in self.rungs]  # by name: "0..3" and "nano,micro,tiny,small" are one sweep
        return {"envs": self.envs, "rungs": rungs, "seeds": self.seeds, "grid": self.grid, "train": base, **extra}


TRAIN_AXES: tuple[str, ...] = ("num_levels", "repair_levels", "sampler")
"""Training settings a grid may sweep besides env dials (each trial's run name and its records'
``setting`` tell the arms apart; see ``capgap.eval.records.SETTING_KEYS``)."""


def _setting(name: str, value: str) -> int | str:
    if name == "sampler":
        if value not in SAMPLERS:
            raise CapgapError(f"--grid sampler={value}: unknown level sampler; expected one of {', '.join(SAMPLERS)}")
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise CapgapError(f"--grid {name}={value}: {name} takes whole numbers >= 0 (0 = unlimited fresh levels)")
    return n


def source_run(root: Path, trial: Args, where: Iterable[str] = ()) -> Path:
    """The finished run under ``root`` (a sweep dir, or a dir of run dirs) that ``trial`` fine-tunes:
    the one of the same env, rung, family and seed whose dials include every ``where`` pair
    (``p_disambiguate=0``). One-line errors when none or several match, or it is unfinished."""
    want = parse_dials(tuple(where))
    runs = root / "runs" if (root / "runs").is_dir() else root
    r = rung(trial.rung).name
    found = []
    for config_path in sorted(runs.glob("*/config.json")):
        c = rundir.read_config(config_path.parent)
        if (c.get("env"), c.get("family"), c.get("seed")) != (trial.env, trial.family, trial.seed):
            continue
        if rung(c["rung"]).name != r:
            continue
        dials = parse_dials(tuple(c.get("dials", ())))
        if all(k in dials and dials[k] == v for k, v in want.items()):
            found.append(config_path.parent)
    what = f"{trial.env.split('/')[-1]} {r} ({trial.family}) seed {trial.seed}"
    if not found:
        raise CapgapError(f"--init-from {root}: no run of {what}" + (f" with {' '.join(where)}" if where else "")
                          + "; train it first or fix --init-where")
    if len(found) > 1:
        raise CapgapError(f"--init-from {root}: {len(found)} runs of {what} match ({found[0].name}, "
                          f"{found[1].name}, ...); pick one with --init-where, e.g. --init-where p_disambiguate=0")
    if not rundir.is_done(found[0]):
        raise CapgapError(f"--init-from {root}: {found[0].name} is not finished; finish that sweep first")
    return found[0]


def parse_range(text: str, what: str) -> list[str]:
    """``"0..3,5"`` -> ``["0", "1", "2", "3", "5"]``; names pass through (``"tiny,small"``)."""
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("..")
        if sep:
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                raise CapgapError(f"malformed {what} range {part!r}; write e.g. 0..4 (inclusive) or 0,2,4")
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(part)
    if not out:
        raise CapgapError(f"empty {what} list {text!r}; give at least one, e.g. 0..2")
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0..2,7"`` -> ``[0, 1, 2, 7]``, with a one-line error for anything but non-negative integers."""
    seeds = parse_range(text, "seed")
    bad = [x for x in seeds if not x.isdigit()]
    if bad:
        raise CapgapError(f"malformed seed {bad[0]!r}; seeds are non-negative integers, e.g. 0..4")
    return [int(x) for x in seeds]


def parse_grid(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["p_disambiguate=0,0.02,0.1"]`` -> ``{"p_disambiguate": ["0", "0.02", "0.1"]}`` (values stay
    strings: :func:`validate` checks them, each trial parses its own). A name is an env dial or one
    of ``TRAIN_AXES``."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name.isidentifier() or not values.strip(","):
            raise DialError(f"malformed sweep dial {spec!r}; write it as name=v1,v2,..., e.g. p_disambiguate=0,0.1")
        grid[name] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def validate(sweep: Sweep) -> None:
    """Fail fast, with one line, on anything that would make a trial fail at its start."""
    if not sweep.envs or not sweep.rungs or not sweep.seeds:
        raise CapgapError("the sweep grid is empty: give at least one env, rung and seed")
    fields = {f.name for f in dataclasses.fields(Args)} - set(TRAIN_AXES)
    for name in sweep.grid:
        if name in fields:
            raise CapgapError(f"--grid {name}: a grid runs over env dials and {', '.join(TRAIN_AXES)}; for other "
                              f"training settings run one sweep per value (--{name.replace('_', '-')} V --out DIR_V)")
    if sweep.init_where and not sweep.repairs():
        raise CapgapError("--init-where picks among the runs of a sweep: give --init-from a sweep dir")
    for env in sweep.envs:
        task_class(env)
    for r in sweep.rungs:
        rung(r)
    trials = sweep.trials()
    for trial in trials:
        check_args(trial)
        task_class(trial.env).from_dials(**parse_dials(trial.dials))
    names = [rundir.run_name(config_of(t)) for t in trials]
    if len(set(names)) != len(names):
        raise CapgapError("two trials would share a run directory; do rungs or seeds repeat?")


GROWABLE = ("envs", "rungs", "seeds")
"""Lists a sweep may grow along: rerunning with more of them (or more values of a ``--grid`` dial)
trains the new trials beside the finished ones. Everything else must match."""


def _grows(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` is ``old`` with more envs, rungs, seeds or grid values (and nothing else changed)."""
    if {k: v for k, v in old.items() if k not in (*GROWABLE, "grid")} != \
            {k: v for k, v in new.items() if k not in (*GROWABLE, "grid")}:
        return False
    if any(not set(old.get(k, [])) <= set(new.get(k, [])) for k in GROWABLE):
        return False
    grid_old, grid_new = old.get("grid", {}), new.get("grid", {})
    return set(grid_old) == set(grid_new) and all(set(grid_old[d]) <= set(grid_new[d]) for d in grid_old)


def prepare(sweep: Sweep) -> None:
    """Create the sweep dir, or check that it holds this very sweep, or the same sweep with fewer
    envs, rungs, seeds or grid values (:data:`GROWABLE`: it then grows, and records the new grid)."""
    path = sweep.out / "sweep.json"
    config = json.loads(json.dumps(sweep.config()))
    if path.exists():
        old = json.loads(path.read_text())
        old["rungs"] = [rung(r).name for r in old.get("rungs", [])]  # recorded by index before names
        if isinstance(old.get("train"), dict):  # a sweep from before a field existed meant its default
            old["train"] = {**{k: v for k, v in rundir.ADDED_DEFAULTS.items() if k in config["train"]},
                            **old["train"]}
        if old == config:
            return
        if not _grows(old, config):
            diff = sorted(k for k in config if old.get(k) != config[k])
            raise RunError(f"{sweep.out} holds another sweep (it differs in: {', '.join(diff)}); "
                           "use another --out, or delete that dir (a sweep may only grow: more envs, rungs, "
                           "seeds or grid values, the same training settings)")
        rundir.write_json(path, config)
        return
    with rundir.disk_guard(sweep.out):
        sweep.out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, config)


def is_done(trial: Args) -> bool:
    return rundir.is_done(Path(trial.out) / rundir.run_name(config_of(trial)))


def run_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Train one trial (resuming it if it was interrupted)."""
    return run_trials([config])[0]


def run_trials(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train trials that differ only in their seed as one batched group (``train_seeds``), resuming
    interrupted ones; the one function every backend runs. Returns each trial's summary."""
    args = [Args(**{**c, "dials": tuple(c["dials"])}) for c in configs]
    return [{"run": d.name, **rundir.read_done(d)} for d in train_seeds(args)]


GROUP_MAX_PARAMS = 16_000
"""Seeds of a rung up to this many parameters train as one group (``train_seeds``): these rungs
are overhead-bound, so three seeds in one process deliver 1.9x (``nano``), 1.6x (``tiny``) the
env-steps/s of one (``benchmarks/group_speed.py``, one thread, 2-core CI machine). From ``small``
(31k parameters) on the kernels are compute-bound: a group gains nothing (1.01x), so each seed
runs in a process of its own, which spreads over more cores."""


def plan(trials: list[Args], group: bool = True) -> list[list[Args]]:
    """The sweep's jobs, largest first (so the longest start first): trials equal in everything but
    the seed and small enough to gain (``GROUP_MAX_PARAMS``) as one group; every other trial alone."""
    jobs: dict[tuple, list[Args]] = {}
    for t in trials:
        config = {k: v for k, v in config_of(t).items() if k not in seeds.PER_SEED}
        key: tuple = (json.dumps(config, sort_keys=True),)
        if not group or _params(t) > GROUP_MAX_PARAMS:
            key += (t.seed,)
        jobs.setdefault(key, []).append(t)
    return sorted(jobs.values(), key=lambda job: -_cost(job))


def _cost(job: list[Args]) -> float:
    """A job's expected one-thread seconds at its cap (``total_steps``; with ``--until-learned`` it may
    stop sooner): per env step of the group, ~56 µs shared by its seeds plus, per seed, ~22 µs and
    2.2 ns per parameter (fitted to benchmarks/group_speed.py on the CI machine; only the order matters)."""
    t = job[0]
    return t.total_steps * (56 + len(job) * (22 + 0.0022 * _params(t))) * 1e-6


def estimate(sweeps: list[Sweep], workers: int, group: bool = True) -> dict[str, Any]:
    """The cost model's estimate of the unfinished trials (``capgap.train.sweep._cost``: one-thread
    seconds per job at its step cap, fitted on the 2-core CI machine; evaluation not counted):
    core-seconds, and the wall time on ``workers`` workers if every run trained to its cap (an
    upper bound: competence stopping ends learned runs early), in all and per env."""
    todo = [t for s in sweeps for t in s.trials() if not is_done(t)]
    jobs = plan(todo, group)
    costs = [_cost(job) for job in jobs]
    core_s = sum(costs)
    wall = max(core_s / max(workers, 1), max(costs, default=0.0))
    by_env = {e: sum(c for job, c in zip(jobs, costs, strict=True) if job[0].env == e)
              for e in sorted({job[0].env for job in jobs})}
    return {"trials": len(todo), "jobs": len(jobs), "core_s": core_s, "wall_s_at_cap": wall,
            "until_learned": any(t.until_learned for t in todo), "by_env": by_env}


def describe_estimate(est: dict[str, Any], workers: int, what: str = "sweep") -> str:
    """The estimate as the lines printed before a sweep or study (``what``) trains."""
    if not est["trials"]:
        return f"{what}: every trial has finished"
    early = "competence stopping ends learned runs early; " if est["until_learned"] else ""
    lines = [f"{what}: {est['trials']} trials to train in {est['jobs']} jobs on {workers} workers; the cost model "
             f"(steps x measured seconds per step, evaluation not counted) says {_duration(est['core_s'])} of one "
             f"core if every run trained to its cap: {_duration(est['wall_s_at_cap'])} of wall time at most "
             f"({early}rerun the command to resume)"]
    if len(est["by_env"]) > 1 or what != "sweep":
        lines += [f"  {env}: {_duration(s)} of one core at the cap" for env, s in est["by_env"].items()]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"17 min"``, ``"3.4 h"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _params(t: Args) -> int:
    return _count(t.env, t.rung, t.family, t.dials)


@functools.cache
def _count(env: str, rung_: str, family: str, dials: tuple[str, ...]) -> int:
    return build(env, rung_, family, **parse_dials(dials)).num_params()


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: end this worker if the sweep process dies (e.g. is killed). Ctrl-C is the
    parent's to handle (it ends the workers): a worker ignores it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_local(fn: Callable[[dict[str, Any]], dict[str, Any]], items: list[dict[str, Any]], workers: int,
              on_done: Callable[[dict[str, Any]], None]) -> None:
    """Run ``fn`` over ``items`` in ``workers`` processes (spawned, so torch starts clean)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        for fut in as_completed([pool.submit(fn, item) for item in items]):
            on_done(fut.result())
    except BaseException:  # an error (or Ctrl-C) ends the other workers now, rather than after their jobs
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def run_ray(fn: Callable[[dict[str, Any]], dict[str, Any]], items: list[dict[str, Any]], threads: int,
            address: str | None, on_done: Callable[[dict[str, Any]], None]) -> None:
    """Run ``fn`` over ``items`` as Ray tasks of ``threads`` CPUs each."""
    try:
        import ray
    except ImportError:
        raise CapgapError("the ray backend needs Ray: pip install 'capgap[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        task = ray.remote(num_cpus=threads)(fn)
        pending = [task.remote(item) for item in items]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            on_done(ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()


def run_sweep(sweep: Sweep, backend: str = "local", workers: int = 0, address: str | None = None,
              progress: bool = True, group: bool = True, threads: int = 0) -> list[dict[str, Any]]:
    """Run every unfinished trial; returns the summaries of the trials run now. ``group``: train the
    seeds of a small rung as one batched group (:func:`plan`). ``threads``: torch threads per worker
    (0 = the cores shared out among the workers; pass 1 when other work shares the machine: torch
    threads that wait for a busy core slow a run several-fold)."""
    return run_sweeps([sweep], sweep.out, backend, workers, address, progress, group, threads)


def run_sweeps(sweeps: list[Sweep], lock: Path, backend: str = "local", workers: int = 0, address: str | None = None,
               progress: bool = True, group: bool = True, threads: int = 0) -> list[dict[str, Any]]:
    """:func:`run_sweep` over several sweeps as one pool of jobs (a study whose parts differ in their
    base config: budgets, seeds), largest first; ``lock``: the dir a second process on the same
    study is refused on."""
    if backend not in ("local", "ray"):
        raise CapgapError(f"unknown backend {backend!r}; expected local or ray")
    if threads < 0:
        raise CapgapError(f"--threads {threads} must be >= 0 (0 = the cores shared out among the workers)")
    if workers < 0:
        raise CapgapError(f"--workers {workers} must be >= 0 (0 = one per core)")
    for sweep in sweeps:
        validate(sweep)
        prepare(sweep)
    from tqdm import tqdm

    with rundir.run_lock(lock, wait_s=0):  # a second sweep on this --out stops at once
        cores = os.cpu_count() or 1
        trials = [t for sweep in sweeps for t in sweep.trials()]
        todo = [t for t in trials if not is_done(t)]
        jobs = plan(todo, group)
        workers = min(workers or cores, max(len(jobs), 1))
        threads = threads or max(1, cores // workers)  # fewer jobs than workers: each gets more threads
        items = [[{**config_of(t), "threads": threads} for t in job] for job in jobs]
        done: list[dict[str, Any]] = []
        with tqdm(total=len(trials), initial=len(trials) - len(todo), unit="trial", disable=not progress,
                  dynamic_ncols=True, desc=f"sweep {lock.name}") as bar:  # closed before an error prints

            def on_done(summaries: list[dict[str, Any]]) -> None:
                for summary in summaries:
                    done.append(summary)
                    bar.update(1)
                    bar.set_postfix(last=summary["run"][-40:], C_test=f"{summary.get('C_test', float('nan')):.2f}",
                                    A_test=f"{summary.get('A_test', float('nan')):.2f}")

            if backend == "local":
                run_local(run_trials, items, workers, on_done)
            else:
                run_ray(run_trials, items, threads, address, on_done)
    return done


def evaluate_all(path: Path, episodes: int, workers: int = 0, inspect: bool = False,
                 progress: bool = True, threads: int = 1) -> tuple[int, int, int]:
    """``capgap eval``: :func:`capgap.eval.evaluator.evaluate_run` on every run under ``path``, in
    ``workers`` processes (0 = one per core; 1 = in this process, whose thread count is restored
    afterwards), ``threads`` torch threads each; returns (runs, checkpoints evaluated, checkpoints inspected)."""
    import torch
    from tqdm import tqdm

    from capgap.eval.evaluator import evaluate_run, find_runs

    runs = find_runs(Path(path))
    workers = min(workers or os.cpu_count() or 1, len(runs))
    jobs = [{"run_dir": str(r), "episodes": episodes, "threads": threads, "inspect": inspect} for r in runs]
    done = [0, 0]
    with tqdm(total=len(jobs), unit="run", desc="eval", dynamic_ncols=True, disable=not progress) as bar:

        def on_done(r: dict[str, Any]) -> None:
            done[0] += r["evaluated"]
            done[1] += r["inspected"]
            bar.update(1)

        if workers <= 1:
            before = torch.get_num_threads()
            try:
                for job in jobs:
                    on_done(evaluate_run(job))
            finally:
                torch.set_num_threads(before)
        else:
            run_local(evaluate_run, jobs, workers, on_done)
    return len(runs), done[0], done[1]
