"""``capgap pack``: a study's results, small enough to commit, that report and resume like the study.

A study's directory is mostly weights: checkpoints and TensorBoard events are ~90% of a run, and
its episode records (``episodes/step_<t>.jsonl``, what every table and figure is computed from)
compress about tenfold. ``pack(src, dst)`` copies each *finished* run of ``src`` (one with a
``done.json``) to the same place under ``dst`` with everything but the weights and the events:

    config.json, done.json, evals.jsonl, inspect.jsonl, ...   copied
    episodes/step_<t>.jsonl                                   -> episodes/step_<t>.jsonl.xz
    events.out.tfevents.* (TensorBoard)                       -> scalars.jsonl.xz: every scalar
                                                                 curve, float32-exact, images left out
    checkpoints/, .lock                                       left out

together with the study's own files outside its runs (``sweep.json``, ...; a ``report/`` is left
out: ``capgap report`` writes it again, TensorBoard included). Unfinished runs are left out: their
checkpoints are what resuming needs.

What a packed study is good for:

- ``capgap report DST`` (and ``capgap scaling --report-only``, ``experiments/arm_difference.py``)
  read it as they read the study: the same records give the same rows.
- **Resuming on another machine or after a wipe.** Pack into the study's own place
  (``capgap pack results/NAME sweeps/NAME``) and rerun the study's command: a run with a
  ``done.json`` is finished, so only what is missing trains. (A packed run cannot be fine-tuned
  from, or evaluated on more episodes: it has no weights.)

Packing is incremental: a run already packed with the same ``done.json`` is skipped, so packing a
study again as it grows copies only the new runs.
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capgap.envs import RunError
from capgap.rundir import PACKED, episode_logs

LEFT_OUT_FILES = ("events.out.tfevents.", ".")
"""Prefixes of a run's top-level files that are not copied: TensorBoard events (their scalars are
packed as ``SCALARS``), ``.lock`` and other hidden files."""
SCALARS = "scalars.jsonl.xz"
"""A packed run's TensorBoard scalars: one line per tag, ``{"tag", "steps", "values"}``."""
REPORT_DIR = "report"
"""A study's report dir: written again from the records by ``capgap report``, so not packed."""


@dataclass
class Packed:
    """What one ``pack`` did: runs copied, runs already there, unfinished runs left out, bytes."""

    packed: int = 0
    unchanged: int = 0
    unfinished: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / x).exists() for x in ("checkpoints", "episodes", "done.json"))


def find_runs(src: Path) -> list[Path]:
    """The run dirs under ``src`` (itself, if it is one), sorted; none inside a ``report/``."""
    if _is_run(src):
        return [src]
    return sorted(p.parent for p in src.rglob("config.json")
                  if _is_run(p.parent) and REPORT_DIR not in p.relative_to(src).parts)


def _write_scalars(run: Path, out: Path) -> None:
    """Every scalar curve of ``run``'s TensorBoard events (what a resumed run purged, left out, as
    TensorBoard shows it) to ``out``: values printed with 9 significant digits, so that each reads
    back as the very float32 TensorBoard stored."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 1, "tensors": 1, "histograms": 1})
    tb_log = logging.getLogger("tensorboard")   # a resumed run's purge is expected: no "TensorFlow restart" warning
    level = tb_log.level
    tb_log.setLevel(logging.ERROR)
    try:
        ea.Reload()
    finally:
        tb_log.setLevel(level)
    with lzma.open(out, "wt", encoding="utf-8", preset=9) as f:
        for tag in sorted(ea.Tags()["scalars"]):
            events = ea.Scalars(tag)
            f.write(json.dumps({"tag": tag, "steps": [e.step for e in events]})[:-1]
                    + ', "values": [' + ", ".join(format(e.value, ".9g") for e in events) + "]}\n")


def read_scalars(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """A packed run's TensorBoard scalars: ``{tag: (steps, values)}`` ({} where it had no events)."""
    path = Path(run) / SCALARS
    if not path.is_file():
        return {}
    out: dict[str, tuple[list[int], list[float]]] = {}
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec: dict[str, Any] = json.loads(line)
            out[rec["tag"]] = (rec["steps"], rec["values"])
    return out


def pack_run(src: Path, dst: Path) -> bool:
    """Copy the finished run ``src`` to ``dst``, packed (see the module). Returns False, copying
    nothing, where ``dst`` already holds it with the same ``done.json``. Atomic: the copy is built
    beside ``dst`` and renamed into place, so a killed pack leaves ``dst`` as it was."""
    done = src / "done.json"
    if not done.is_file():
        raise RunError(f"{src} has not finished (no done.json): only finished runs are packed")
    if (dst / "done.json").is_file() and (dst / "done.json").read_bytes() == done.read_bytes():
        return False
    tmp = dst.with_name(dst.name + ".packing")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "episodes").mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name != "done.json" and not f.name.startswith(LEFT_OUT_FILES):
            shutil.copy2(f, tmp / f.name)
    for f in episode_logs(src):
        out = tmp / "episodes" / (f.name if f.suffix == PACKED else f.name + PACKED)
        if f.suffix == PACKED:
            shutil.copy2(f, out)
        else:
            with f.open("rb") as i, lzma.open(out, "wb", preset=9) as o:
                shutil.copyfileobj(i, o)
    if any(src.glob("events.out.tfevents.*")):
        _write_scalars(src, tmp / SCALARS)
    shutil.copy2(done, tmp / "done.json")  # last, as training writes it
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return True


def pack(src: Path | str, dst: Path | str, progress: bool = True) -> Packed:
    """Pack every finished run of the study (or run) ``src`` into ``dst``, keeping its layout, with
    the study's own files; see the module. Raises ``RunError`` (one line) for a ``src`` that is not
    a study, or a ``dst`` inside it."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise RunError(f"{src} is not a directory; give a sweep, a study or a run dir to pack")
    if dst.resolve() == src.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise RunError(f"{dst} is inside {src}; pack into a directory of its own (e.g. results/{src.name})")
    runs = find_runs(src)
    if not runs:
        raise RunError(f"no capgap runs under {src} (no */config.json with checkpoints or episodes); "
                       "train or sweep first")
    out = Packed()
    for f in sorted(src.rglob("*")):  # the study's own files: sweep.json, ...
        rel = f.relative_to(src)
        if (f.is_file() and REPORT_DIR not in rel.parts and not f.name.startswith(".")
                and not any(f.is_relative_to(r) for r in runs)):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
    from tqdm import tqdm

    for run in tqdm(runs, desc=f"pack {src.name}", unit="run", disable=not progress or len(runs) < 2,
                    dynamic_ncols=True):
        if not (run / "done.json").is_file():
            out.unfinished += 1
            continue
        target = dst / run.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if pack_run(run, target):
            out.packed += 1
            out.bytes_in += _size(run)
            out.bytes_out += _size(target)
        else:
            out.unchanged += 1
    return out
