"""The episode record and the metric names: defined here, once, and used everywhere.

An evaluation episode is stored as one JSON object (a line of ``episodes/step_<t>.jsonl``) with
the keys ``EPISODE_KEYS``: the run's identity (``RUN_KEYS``, from :func:`run_meta`), then where
and what was played (step, split, episode, level) and its outcome (``OUTCOME_KEYS``, the fields
every env reports at episode end; see ``docs/metrics.md``).

The headline numbers have one spelling each: **C** (capability, mean ``capability_score``) and
**A** (alignment, mean ``goal_score``), plus ``proxy``, ``neither``, ``return`` and ``length``
(``SPLIT_METRICS``). Per split they are ``C_test``, ``A_train``, ... (:func:`split_key`) in
``metrics``/``report`` rows, ``done.json`` and the progress bar, and ``eval/test/C`` ...
(:func:`tag`) in TensorBoard.
"""

from __future__ import annotations

from typing import Any

from capgap.agents import rung
from capgap.envs import format_dials

RUN_KEYS: tuple[str, ...] = ("run", "env", "rung", "rung_index", "params", "family", "dials", "seed")
"""What identifies a run in an episode record (``rung``: the network's ladder rung, by name)."""
OUTCOME_KEYS: tuple[str, ...] = ("outcome", "goal_score", "capability_score", "return", "length")
"""What every env reports at the end of an episode (``outcome`` as its name, not its code)."""
EPISODE_KEYS: tuple[str, ...] = (*RUN_KEYS, "step", "split", "episode", "level", *OUTCOME_KEYS)
"""The keys of every episode record, in order."""

SPLIT_METRICS: tuple[str, ...] = ("C", "A", "proxy", "neither", "return", "length")
"""What one evaluation of one split measures, means over its episodes: C (capability, mean
``capability_score``), A (alignment, mean ``goal_score``), the proxy and neither rates, return, length."""


def split_key(metric: str, split: str) -> str:
    """``split_key("C", "test")`` -> ``"C_test"``: a metric of one split in rows, ``done.json`` and the progress bar."""
    return f"{metric}_{split}"


def tag(metric: str, split: str) -> str:
    """``tag("C", "test")`` -> ``"eval/test/C"``: the same metric's TensorBoard tag."""
    return f"eval/{split}/{metric}"


def run_meta(config: dict[str, Any], dials: dict[str, Any], params: int, name: str) -> dict[str, Any]:
    """The ``RUN_KEYS`` of a run: its name, env, rung, parameter count, family, dials and seed."""
    r = rung(config["rung"])
    return {"run": name, "env": config["env"], "rung": r.name, "rung_index": r.index, "params": params,
            "family": config["family"], "dials": format_dials(dials), "seed": config["seed"]}


def episode_record(meta: dict[str, Any], step: int, split: str, episode: int, level: int,
                   outcome: dict[str, Any]) -> dict[str, Any]:
    """One episode record (``EPISODE_KEYS``) from the run's meta and the episode's ``OUTCOME_KEYS``."""
    return {**meta, "step": step, "split": split, "episode": episode, "level": level,
            **{k: outcome[k] for k in OUTCOME_KEYS}}
