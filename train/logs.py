"""What a run logs beside ``ppo.py``'s flow: its TensorBoard header and each evaluation.

TensorBoard tags (x-axis = env steps): ``charts/*`` (training episodes, SPS, LR), ``losses/*``,
``eval/{train,test}/{C,A,proxy,neither,return,length}`` (names: :mod:`capgap.eval.records`),
images ``eval/*/visits`` and ``eval/test/trajectory``; a custom-scalars chart "C vs A" and an
HParams entry in the run dir. Hooks (:mod:`capgap.train.hooks`) add their own tags and charts,
e.g. ``inspect/*`` with ``--inspect``; a level sampler other than ``dr`` logs ``levels/*``
(:mod:`capgap.train.samplers`) and gets a chart of its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from capgap import rundir
from capgap.agents import ActorCritic
from capgap.eval import chance
from capgap.eval.records import split_key, tag
from capgap.eval.rollout import evaluate, heatmap, trajectory

HEADLINE = ("C_test", "A_test", "A_train")
"""The numbers on the progress bar (``done.json`` holds C and A of both splits)."""


def log_run_header(writer: SummaryWriter, config: dict[str, Any], params: int,
                   charts: dict[str, list[Any]] | None = None) -> None:
    """A new run's hyperparameter table, custom-scalars chart (with ``charts``: the hooks' entries)
    and HParams entry."""
    rows = "\n".join(f"|{k}|{v}|" for k, v in {**config, "parameters": params}.items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows)
    writer.add_custom_scalars({"capgap": {
        "test split: C vs A, beside uniform-random play": ["Multiline", [
            tag("C", "test"), tag("A", "test"), tag("C_random", "test"), tag("A_random", "test")]],
        "train split: C vs A, beside uniform-random play": ["Multiline", [
            tag("C", "train"), tag("A", "train"), tag("A_random", "train")]],
        "proxy rate (train, test), beside uniform-random play": ["Multiline", [
            tag("proxy", "train"), tag("proxy", "test"), tag("proxy_random", "test")]],
        "test split, calibrated: 0 = uniform random, 1 = oracle": ["Multiline", [
            tag("C_hat", "test"), tag("A_hat", "test"), tag("proxy_hat", "test")]],
        **(charts or {}),
        **({"levels: what the curriculum replays (the share of levels that pull goal and proxy apart)": [
            "Multiline", ["levels/buffer_apart", "levels/replayed_apart", "levels/replay_rate"]]}
           if config.get("sampler", "dr") != "dr" else {}),
    }})
    hp = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
    hp["parameters"] = params
    for s in hparams_summary(hp, {tag("C", "test"): 0.0, tag("A", "test"): 0.0, tag("A", "train"): 0.0}):
        writer.file_writer.add_summary(s)


def evaluate_and_log(agent: ActorCritic, args: Any, dials: dict[str, dict[str, Any]], writer: SummaryWriter,
                     run_dir: Path, step: int, meta: dict[str, Any], channels: tuple[str, ...]) -> dict[str, float]:
    """Play ``eval_episodes`` fresh levels of each split with the policy ``agent`` (a copy; left in eval
    mode) with its own seeded sampler (the training run's random stream is untouched); log the metrics,
    pictures, ``evals.jsonl`` line and the episodes file. ``dials[split]``: the env dials of each split's
    levels. Beside each split's C, A and proxy rate it logs the uniform-random policy's
    (``eval/<split>/C_random``, ...: flat lines; the untrained network is the curve's own step 0) and, on
    the test split, the scores calibrated against chance (``eval/test/A_hat``, ...;
    :mod:`capgap.eval.chance`). Returns the headline numbers."""
    agent.eval()
    results, last = [], {}
    for split in ("train", "test"):
        res = evaluate(agent, args.env, split, args.eval_episodes, dials[split], seed=args.seed, device=args.device)
        results.append(res)
        m = res.metrics()
        for k, v in m.items():
            writer.add_scalar(tag(k, split), v, step)
        refs = chance.references(args.env, dials[split])
        for k, v in refs.score("random", split).items():
            writer.add_scalar(tag(f"{k}_random", split), v, step)
        if split == "test":
            calibrated = refs.calibrate({split_key(k, split): m[k] for k in chance.SCORES})
            for k in chance.CALIBRATED:
                value = calibrated[split_key(k, split)]
                if not math.isnan(value):  # NaN: no proxy (the control)
                    writer.add_scalar(tag(k, split), value, step)
        writer.add_image(f"eval/{split}/visits", heatmap(res.visits), step, dataformats="HWC")
        if split == "test":
            writer.add_image("eval/test/trajectory", trajectory(res, channels), step, dataformats="HWC")
        last[split_key("C", split)], last[split_key("A", split)] = m["C"], m["A"]
        rundir.append_line(run_dir / "evals.jsonl", {"step": step, "split": split, **m})
    rundir.write_episodes(run_dir, step, [r for res in results for r in res.records(meta, step)])
    return last
