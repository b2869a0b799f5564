"""The evaluator: every checkpoint of every run, on both splits, as per-episode outcome files.

    capgap eval <run dir | sweep dir> [--episodes 512] [--inspect]

For each checkpoint ``checkpoints/step_<t>.pt`` of a run, the policy plays one episode on each
of ``episodes`` fresh levels of each split (the same levels for every run and checkpoint, and
disjoint from training levels: see :mod:`capgap.eval.rollout`), and the outcomes are stored as
``episodes/step_<t>.jsonl`` in the run dir, one JSON object per episode, so any metric can be
recomputed later. Training already writes these files at each of its evaluations; the
evaluator fills in what is missing (or has fewer episodes than asked), so it is cheap to rerun
and resumes where it stopped. With ``--inspect`` it also fills in, for finished runs, the in-training
inspection of every checkpoint (``inspect.jsonl``, :func:`capgap.eval.inspect.training_summary`):
the same numbers ``capgap train --inspect`` logs, for runs trained without it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from capgap import rundir
from capgap.envs import parse_dials, task_class
from capgap.eval.records import run_meta
from capgap.eval.rollout import evaluate


def find_runs(path: Path) -> list[Path]:
    """The run dirs under ``path`` (itself, if it is one), sorted: dirs with a ``config.json`` and
    checkpoints or episode files (runs copied without their checkpoints can still be reported)."""
    path = Path(path)
    if not path.is_dir():
        raise rundir.RunError(f"{path} is not a directory; give a run dir or a sweep dir")
    if (path / "config.json").exists():
        return [path]
    found = sorted(p.parent for p in path.rglob("config.json")
                   if (p.parent / "checkpoints").is_dir() or (p.parent / "episodes").is_dir())
    if not found:
        raise rundir.RunError(f"no capgap runs under {path} (no */config.json with checkpoints or episodes); "
                              "train or sweep first")
    return found


def _complete(path: Path, episodes: int) -> bool:
    if not path.exists():
        return False
    counts = Counter(json.loads(line)["split"] for line in path.read_text().splitlines())
    return counts["train"] >= episodes and counts["test"] >= episodes


def evaluate_run(job: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the checkpoints of one run that lack an episodes file; ``job`` = {run_dir, episodes, threads,
    inspect}: with ``inspect``, also inspect those of a finished run missing from its ``inspect.jsonl``."""
    import torch

    torch.set_num_threads(job.get("threads", 1))
    run_dir, episodes = Path(job["run_dir"]), job["episodes"]
    config = rundir.read_config(run_dir)
    dials = parse_dials(config["dials"])
    agent = rundir.build_agent(config)  # each checkpoint loaded in
    meta = run_meta(config, dials, agent.num_params(), rundir.run_name(config))
    split_dials = rundir.split_dials(config)
    written = 0
    for ckpt in rundir.checkpoints(run_dir):
        step = rundir.checkpoint_step(ckpt)
        rundir.load_checkpoint(ckpt, agent)  # a damaged checkpoint is named in one line, evaluated already or not
        if _complete(rundir.episodes_path(run_dir, step), episodes):
            continue
        results = [evaluate(agent, config["env"], split, episodes, split_dials[split], seed=config["seed"])
                   for split in ("train", "test")]
        rundir.write_episodes(run_dir, step, [r for res in results for r in res.records(meta, step)])
        written += 1
    inspected = inspect_run(run_dir, agent, config, dials, meta) if job.get("inspect") else 0
    return {"run": run_dir.name, "evaluated": written, "inspected": inspected}


def inspect_run(run_dir: Path, agent: Any, config: dict[str, Any], dials: dict[str, Any], meta: dict[str, Any]) -> int:
    """Append to a finished run's ``inspect.jsonl`` the inspection of each checkpoint it lacks (a run
    still training is left alone: its trainer owns the file; an env with neither a ``goal_plane``
    nor a proxy has nothing to inspect; ``capgap.eval.monitor.inspection`` says what is
    computed). Returns how many were added."""
    import time

    cls = task_class(config["env"])
    if not rundir.is_done(run_dir) or (cls.goal_plane is None and cls.control):  # nothing to inspect
        return 0
    from capgap.eval.inspect import inspection_record
    from capgap.eval.monitor import inspection

    path = run_dir / "inspect.jsonl"
    have = {json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.strip()} if path.exists() else set()
    added = 0
    for ckpt in rundir.checkpoints(run_dir):
        step = rundir.checkpoint_step(ckpt)
        if step in have:
            continue
        rundir.load_checkpoint(ckpt, agent)
        t0 = time.perf_counter()
        summary = inspection(agent.eval(), config["env"], dials, config["seed"])
        rundir.append_line(path, inspection_record(summary, step, meta, time.perf_counter() - t0))
        added += 1
    return added


def episode_files(path: Path) -> list[Path]:
    """Every per-episode outcome file under the runs of ``path`` (plain, or packed by ``capgap pack``)."""
    return [f for run in find_runs(path) for f in rundir.episode_logs(run)]
