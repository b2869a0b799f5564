"""Run directories: what a training run leaves on disk, and the one place that reads and writes it.

Training (``capgap.train.ppo``), sweeps and the evaluator all go through this module, so the
trainer holds only PPO and the evaluator imports nothing from it. A run directory holds::

    config.json                 the run's config (``Args`` as plain JSON)
    events.out.tfevents.*       TensorBoard
    evals.jsonl                 one line per split per evaluation: {"step", "split", <metrics>}
    inspect.jsonl               one line per evaluation, if inspected: {"step", <run meta>, "seconds", <inspect/*>}
    episodes/step_<t>.jsonl     one record per evaluation episode (``capgap.eval.records``); in a
                                packed run (``capgap pack``, :mod:`capgap.rundir.pack`) ``step_<t>.jsonl.xz``
    checkpoints/step_<t>.pt     plain tensors and plain data, loaded with ``weights_only=True``
    done.json                   written last: the run is finished (final step, C and A, steps to learn)
    .lock                       held while a process trains the run

Every file is written atomically (a temporary file, then ``os.replace``), so a killed run leaves
the previous version intact, and a full disk stops the run with one line that names the path
(:func:`disk_guard`): re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import lzma
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from capgap.agents import build, rung
from capgap.envs import RunError, parse_dials

CHECKPOINT_FORMAT = 2
"""Version of the checkpoint layout. 2: plain tensors and data (``weights_only=True``); 1 (before
this module): a pickled engine, which cannot be loaded safely."""

RESUMABLE_DIFFERENCES = ("threads", "progress", "out", "device", "inspect")
"""Config fields that do not change what a run trains: they may differ when resuming (and may be
missing from the config of a run started before they existed)."""
ADDED_DEFAULTS: dict[str, Any] = {
    "until_learned": False, "after_learned": 2, "sampler": "dr", "plr_score": "pvl", "replay_prob": 0.5,
    "buffer_size": 4000, "staleness": 0.3, "temperature": 0.3, "robust": True, "repair_levels": 0,
    "repair_dials": ["p_disambiguate=1"], "repair_prob": 0.5}
"""Config fields that change what a run trains, added after runs were made: a config without one
(an older run, or sweep) meant the value here, and resumes as such."""
LOGS = ("evals.jsonl", "inspect.jsonl")
"""The run's line-per-evaluation logs: trimmed back to the checkpoint on resume."""

OLD_FORMAT_HINT = ("it was written by capgap before checkpoints became plain tensors (up to commit 90de72e); "
                   "train it again in a fresh --out, or evaluate it with that older capgap")


# ----- writing ------------------------------------------------------------------------


@contextlib.contextmanager
def disk_guard(path: Path | str) -> Iterator[None]:
    """Turn a full disk (or an exhausted quota) while writing ``path`` into a one-line
    :class:`RunError`. Files are written atomically, so nothing that was there is lost."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise RunError(f"no space left on device writing {err.filename or path}; free some space and "
                       "re-run the same command: it resumes from the last checkpoint") from None


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers see the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with disk_guard(path):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=indent)))


def append_line(path: Path, data: Mapping[str, Any]) -> None:
    """Append ``data`` as one JSON line (``evals.jsonl``)."""
    with disk_guard(path), path.open("a") as f:
        f.write(json.dumps(data) + "\n")


# ----- the run directory --------------------------------------------------------------


def source_dir(init_from: str | Path) -> Path:
    """The run dir a fine-tuning run started from: ``init_from`` is that run's dir or one of its
    checkpoints (``<run>/checkpoints/step_N.pt``)."""
    src = Path(init_from)
    return src.parent.parent if src.suffix == ".pt" else src


def source_name(init_from: str | Path) -> str:
    """The name of the run a fine-tuning run started from (see :func:`source_dir`)."""
    return source_dir(init_from).name


def run_name(config: Mapping[str, Any]) -> str:
    """``CheeseCorner-v0__tiny__p_disambiguate=0.1__s0``: filterable in TensorBoard.

    ``config`` needs ``env``, ``rung`` (resolved to its name), ``family``, ``dials`` (``name=value``
    strings), ``seed`` and ``name`` (which, when set, is the run name).
    """
    if config.get("name"):
        return config["name"]
    family = "" if config["family"] == "conv" else f"-{config['family']}"
    parts = [config["env"].split("/")[-1], rung(config["rung"]).name + family]
    parts += [re.sub(r"[^\w.=-]", "_", d) for d in sorted(config["dials"])]
    if config.get("num_levels"):
        parts.append(f"levels={config['num_levels']}")
    if config.get("sampler", "dr") != "dr":
        parts.append(f"sampler={config['sampler']}")
    if config.get("repair_levels"):
        parts.append(f"repair={config['repair_levels']}")
    if config.get("init_from"):  # a fine-tuned run: from=<the run it started from>
        parts.append("from=" + source_name(config["init_from"]))
    return "__".join([*parts, f"s{config['seed']}"])


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.json``, with a one-line error for a corrupt or pre-format-2 one."""
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a capgap run (no config.json)") from None
    except json.JSONDecodeError:
        raise RunError(f"{path} is corrupt; delete the run dir {run_dir} to start over") from None
    if "rung" not in config:  # before the rung had its own name, it was "size"
        raise RunError(f"{run_dir} cannot be resumed or evaluated: {OLD_FORMAT_HINT}")
    return config


def load_init(source: str | Path, config: Mapping[str, Any], agent: torch.nn.Module) -> Path:
    """Load into ``agent`` the network a fine-tuning run starts from: the checkpoint ``source`` (a
    ``.pt`` file) or the latest checkpoint of the run dir ``source``; returns that checkpoint. One-line
    errors unless it is of the same env, rung and family as ``config``, with observations of the same
    shape (the same grid size and salience dials)."""
    path = Path(source)
    ckpt_path = path if path.suffix == ".pt" else latest_checkpoint(path) if path.is_dir() else None
    if ckpt_path is None or not ckpt_path.exists():
        raise RunError(f"--init-from {source}: no checkpoint there; give a run dir with checkpoints or a .pt file")
    ckpt = load_checkpoint(ckpt_path)
    src = ckpt["config"]
    differ = [k for k in ("env", "rung", "family") if rung_or(src, k) != rung_or(config, k)]
    if differ:
        what = "; ".join(f"its {k} is {src[k]!r}, this run's {config[k]!r}" for k in differ)
        raise RunError(f"--init-from {source}: that run is another network ({what}); "
                       "fine-tune with the same env, rung and family")
    try:
        agent.load_state_dict(ckpt["agent"])
    except RuntimeError:
        raise RunError(f"--init-from {source}: its network sees other observations (its dials "
                       f"{', '.join(src['dials']) or 'default'}); keep the dials that shape them, size and "
                       "salience, as they were") from None
    return ckpt_path


def source_config(init_from: str | Path) -> dict[str, Any]:
    """The config of the run a fine-tuning run starts from (``init_from``: its run dir or a checkpoint)."""
    run = source_dir(init_from)
    if (run / "config.json").exists():
        return read_config(run)
    return load_checkpoint(Path(init_from))["config"]


def split_dials(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The env dials each split of a run is evaluated with: the run's own, except that a fine-tuning
    run (``init_from``) keeps its source run's dials for the train split, so that "train" still means
    the task the network learned first (and a repair's cost in capability shows there)."""
    dials = parse_dials(config["dials"])
    train = parse_dials(source_config(config["init_from"])["dials"]) if config.get("init_from") else dials
    return {"train": train, "test": dials}


def rung_or(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, with a rung given by index or name compared by name."""
    return rung(config[key]).name if key == "rung" else config[key]


def check_out(out: Path | str, flag: str = "--out") -> None:
    """One line unless ``out`` is, or can become, a directory (it, or its nearest existing parent, is one)."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise RunError(f"{flag} {out}: {p} is a file, not a directory; give a directory")
            return


def check_run_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """One line unless ``run_dir`` can hold this run: new, empty, or holding this very run (to resume)."""
    check_out(run_dir)
    if (run_dir / "config.json").exists():
        old = read_config(run_dir)
        old = {k: old.get(k, ADDED_DEFAULTS.get(k)) for k in config}
        diff = sorted(k for k in config if k not in RESUMABLE_DIFFERENCES
                      and (rung_or(old, k) if old[k] is not None else None) != rung_or(config, k))
        if diff:
            raise RunError(f"{run_dir} holds another run (its config differs in: {', '.join(diff)}); "
                           "use another --out or --name, or delete that dir")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not a capgap run (no config.json); use another --out or --name")


def prepare_run_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """Create the run dir, or check that it holds this very run (to resume). Refuses another run's dir."""
    check_run_dir(run_dir, config)
    if (run_dir / "config.json").exists():
        return
    with disk_guard(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config)


@contextlib.contextmanager
def run_lock(run_dir: Path, wait_s: float = 15.0) -> Iterator[None]:
    """Hold an exclusive lock on a run dir: two processes never train the same run at once
    (e.g. a resumed sweep while a killed sweep's worker is still exiting)."""
    import fcntl

    with (run_dir / ".lock").open("w") as f:
        deadline = time.time() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise RunError(f"{run_dir} is being trained by another process; wait for it or stop it") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_done(run_dir: Path) -> bool:
    return (run_dir / "done.json").exists()


def read_done(run_dir: Path) -> dict[str, Any]:
    """A finished run's summary (``done.json``: its last step, wall time, C and A of both splits, and
    by the competence rule (:func:`capgap.eval.metrics.stop_step`) ``learned``, ``learned_at`` (steps to
    learn, or None), ``stopped_at`` and ``until_learned``; runs finished before that rule lack these four),
    with a one-line error naming the file when it is missing or unreadable."""
    path = run_dir / "done.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{run_dir} has not finished (no done.json); run its command again to finish it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is corrupt ({e}); delete it and run the run's command again") from None


def read_evals(run_dir: Path) -> list[dict[str, Any]]:
    """The run's live evaluations (``evals.jsonl``: one line per step and split with C, A, proxy, ...);
    [] when it has none yet."""
    path = run_dir / "evals.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def discard_unsaved(run_dir: Path) -> None:
    """Before a fresh start: remove what a process that died before its first checkpoint logged
    (events, ``evals.jsonl``, episode files), so that the new start does not log step 0 twice."""
    for path in run_dir.glob("events.out.tfevents.*"):
        path.unlink()
    for log in LOGS:
        (run_dir / log).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "episodes", ignore_errors=True)


def trim_evals(run_dir: Path, step: int) -> None:
    """Forget the evaluations (and inspections) logged after ``step`` (by a killed process, after its
    last checkpoint)."""
    for log in LOGS:
        path = run_dir / log
        if not path.exists():
            continue
        kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write(path, lambda p, kept=kept: p.write_text("".join(ln + "\n" for ln in kept)))


def episodes_path(run_dir: Path, step: int) -> Path:
    return run_dir / "episodes" / f"step_{step:010d}.jsonl"


PACKED = ".xz"
"""The suffix of a packed (xz-compressed) episode file: ``episodes/step_<t>.jsonl.xz``."""


def find_episodes(run_dir: Path, step: int) -> Path:
    """The episode file to *read* for the evaluation at ``step``: ``episodes/step_<t>.jsonl``, or its
    packed form ``step_<t>.jsonl.xz`` where only that exists (a run copied by ``capgap pack``)."""
    plain = episodes_path(run_dir, step)
    packed = plain.with_name(plain.name + PACKED)
    return packed if not plain.exists() and packed.exists() else plain


def episode_logs(run_dir: Path) -> list[Path]:
    """Every episode file of the run, one per evaluated step, oldest first (plain or packed)."""
    found = {p.name: p for p in (run_dir / "episodes").glob(f"step_*.jsonl{PACKED}")}
    found |= {p.name + PACKED: p for p in (run_dir / "episodes").glob("step_*.jsonl")}  # plain wins
    return [found[k] for k in sorted(found)]


def open_text(path: Path) -> io.TextIOBase:
    """Open a run's text file for reading, decompressing a packed (``.xz``) one."""
    path = Path(path)
    if path.suffix == PACKED:
        return lzma.open(path, "rt", encoding="utf-8")  # type: ignore[return-value]
    return path.open(encoding="utf-8")  # type: ignore[return-value]


def write_episodes(run_dir: Path, step: int, records: list[dict[str, Any]]) -> Path:
    """Store an evaluation's per-episode records as ``episodes/step_<step>.jsonl`` (atomically)."""
    path = episodes_path(run_dir, step)
    with disk_guard(path):
        path.parent.mkdir(exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda p: p.write_text(lines))
    return path


# ----- checkpoints --------------------------------------------------------------------


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((run_dir / "checkpoints").glob("step_*.pt"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_step(path: Path) -> int:
    return int(path.stem.split("_")[1])


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) as ``checkpoints/step_<step>.pt``."""
    path = run_dir / "checkpoints" / f"step_{step:010d}.pt"
    with disk_guard(path):
        path.parent.mkdir(exist_ok=True)
    atomic_write(path, lambda p: torch.save({"format": CHECKPOINT_FORMAT, **state}, p))
    return path


def load_checkpoint(path: Path, agent: torch.nn.Module | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code can run), and load its network into
    ``agent`` if given; one-line errors for a damaged, mismatched or pre-format-2 checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        if "capgap" in str(err):  # weights_only refused one of our classes: the engine pickled by format 1
            raise RunError(f"checkpoint {path} cannot be loaded safely: {OLD_FORMAT_HINT}") from None
        raise RunError(f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err)[:80]}); "
                       "delete it to resume from the previous one") from None
    if not isinstance(ckpt, dict) or "agent" not in ckpt:
        raise RunError(f"checkpoint {path} is unreadable (not a capgap checkpoint); "
                       "delete it to resume from the previous one")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"checkpoint {path} cannot be loaded: {OLD_FORMAT_HINT}")
    if agent is not None:
        try:
            agent.load_state_dict(ckpt["agent"])
        except RuntimeError:
            raise RunError(f"checkpoint {path} holds a different network than this run's config "
                           f"({ckpt.get('params', '?')} parameters); was the run dir reused?") from None
    return ckpt


def build_agent(config: Mapping[str, Any]) -> torch.nn.Module:
    """A run's network, untrained, in eval mode: the env, rung, family and dials of its ``config``."""
    return build(config["env"], config["rung"], config["family"], **parse_dials(config["dials"])).eval()


def load_agent(run_dir: Path | str, checkpoint: Path | str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A run's network at a checkpoint (default: its latest) in eval mode, and the run's config (its
    ``dials`` parsed into a dict under ``config["dial_values"]``, the checkpoint's path under
    ``config["checkpoint"]``). The one way to load an agent from a run dir."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    agent = build_agent(config)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if path is None:
        raise RunError(f"{run_dir} has no checkpoint yet; train it first")
    load_checkpoint(path, agent)
    return agent, {**config, "dial_values": parse_dials(config["dials"]), "checkpoint": str(path)}
