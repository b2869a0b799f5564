"""The evaluator: every checkpoint of every run, on both splits, as per-episode outcome files.

    capgap eval <run dir | sweep dir> [--episodes 512]

For each checkpoint ``checkpoints/step_<t>.pt`` of a run, the policy plays one episode on each
of ``episodes`` fresh levels of each split (the same levels for every run and checkpoint, and
disjoint from training levels: see :mod:`capgap.eval.rollout`), and the outcomes are stored as
``episodes/step_<t>.jsonl`` in the run dir, one JSON object per episode, so any metric can be
recomputed later. Training already writes these files at each of its evaluations; the
evaluator fills in what is missing (or has fewer episodes than asked), so it is cheap to rerun
and resumes where it stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from capgap.envs import DialError
from capgap.eval.rollout import evaluate


def find_runs(path: Path) -> list[Path]:
    """The run dirs under ``path`` (itself, if it is one), sorted."""
    path = Path(path)
    if not path.is_dir():
        raise DialError(f"{path} is not a directory; give a run dir or a sweep dir")
    if (path / "config.json").exists():
        return [path]
    runs = sorted(p.parent for p in path.rglob("config.json") if (p.parent / "checkpoints").is_dir())
    if not runs:
        raise DialError(f"no capgap runs under {path} (no */config.json with checkpoints); train or sweep first")
    return runs


def _complete(path: Path, episodes: int) -> bool:
    if not path.exists():
        return False
    counts = Counter(json.loads(line)["split"] for line in path.read_text().splitlines())
    return counts["train"] >= episodes and counts["test"] >= episodes


def evaluate_run(job: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the checkpoints of one run that lack an episodes file; ``job`` = {run_dir, episodes, threads}."""
    import torch

    from capgap.agents import build
    from capgap.train.ppo import load_checkpoint, parse_dials, run_args, run_meta, write_episodes

    torch.set_num_threads(job.get("threads", 1))
    run_dir, episodes = Path(job["run_dir"]), job["episodes"]
    args = run_args(run_dir)
    dials = parse_dials(args.dials)
    agent = build(args.env, args.size, args.family, **dials).eval()  # one network, each checkpoint loaded in
    meta = run_meta(args, agent.num_params())
    written = 0
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*.pt")):
        step = int(ckpt.stem.split("_")[1])
        if _complete(run_dir / "episodes" / f"step_{step:010d}.jsonl", episodes):
            continue
        load_checkpoint(ckpt, agent)
        results = [evaluate(agent, args.env, split, episodes, dials, seed=args.seed) for split in ("train", "test")]
        write_episodes(run_dir, step, results, meta)
        written += 1
    return {"run": run_dir.name, "evaluated": written}


def episode_files(path: Path) -> list[Path]:
    """Every per-episode outcome file under the runs of ``path``."""
    return sorted(f for run in find_runs(path) for f in (run / "episodes").glob("step_*.jsonl"))
