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

import re
from typing import Any

from capgap.agents import rung
from capgap.envs import format_dials
from capgap.rundir import source_name

RUN_KEYS: tuple[str, ...] = ("run", "env", "rung", "rung_index", "params", "family", "dials", "setting", "seed")
"""What identifies a run in an episode record (``rung``: the network's ladder rung, by name;
``setting``: see :func:`format_setting`)."""
SETTING_KEYS: tuple[str, ...] = ("num_levels", "repair_levels", "sampler", "init_from")
"""The training settings that make a run a different *arm* of a study than a plain run of the
same env, dials and rung: a fixed set of training levels, a repair mix, a level sampler other than
``dr``, and fine-tuning from another run."""
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


def format_setting(config: dict[str, Any]) -> str:
    """``"init_from=CheeseCorner-v0__small__p_disambiguate=0,num_levels=10"``: a run's
    ``SETTING_KEYS`` that are set, one spelling per arm (``""`` for a plain run). A fine-tuning
    run names its source run without the seed, so that the seeds of one arm group together."""
    parts = {}
    if config.get("num_levels"):
        parts["num_levels"] = int(config["num_levels"])
    if config.get("repair_levels"):
        parts["repair_levels"] = int(config["repair_levels"])
    if config.get("sampler", "dr") != "dr":
        parts["sampler"] = config["sampler"]
    if config.get("init_from"):
        parts["init_from"] = re.sub(r"__s\d+$", "", source_name(config["init_from"]))
    return format_dials(parts)


def run_meta(config: dict[str, Any], dials: dict[str, Any], params: int, name: str) -> dict[str, Any]:
    """The ``RUN_KEYS`` of a run: its name, env, rung, parameter count, family, dials, setting and seed."""
    r = rung(config["rung"])
    return {"run": name, "env": config["env"], "rung": r.name, "rung_index": r.index, "params": params,
            "family": config["family"], "dials": format_dials(dials), "setting": format_setting(config),
            "seed": config["seed"]}


def episode_record(meta: dict[str, Any], step: int, split: str, episode: int, level: int,
                   outcome: dict[str, Any]) -> dict[str, Any]:
    """One episode record (``EPISODE_KEYS``) from the run's meta and the episode's ``OUTCOME_KEYS``."""
    return {**meta, "step": step, "split": split, "episode": episode, "level": level,
            **{k: outcome[k] for k in OUTCOME_KEYS}}
