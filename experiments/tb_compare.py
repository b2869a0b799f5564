"""Compare the TensorBoard scalars of two runs (or two dirs of runs), tag by tag and step by step.

    python experiments/tb_compare.py RUN_A RUN_B

Each argument is a run dir (holding ``events.out.tfevents.*``) or a dir above run dirs (a sweep,
an ``--out``): run dirs are paired by their path below it. Every scalar tag is read back with
TensorBoard's ``EventAccumulator``; wall-clock tags (``charts/SPS``) are left out. Prints, per run,
the tags compared and the largest absolute difference; also checks that both runs hold the same
image and tensor tags (text, custom scalars, HParams). Exit status 0 when every compared value is
identical, 1 otherwise.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

WALL_CLOCK = ("charts/SPS",)
"""Tags that measure speed, not what was trained."""


def runs_under(root: Path) -> dict[str, Path]:
    """Run dirs under ``root`` keyed by their path relative to it ("." for ``root`` itself)."""
    dirs = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    return {str(d.relative_to(root)): d for d in dirs}


def load(run_dir: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def compare(a: Path, b: Path) -> tuple[int, int, float, list[str]]:
    """(tags compared, values compared, max abs difference, problems) for two run dirs."""
    ea, eb = load(a), load(b)
    problems = []
    for kind in ("images", "tensors"):
        if set(ea.Tags()[kind]) != set(eb.Tags()[kind]):
            problems.append(f"{kind} tags differ: {sorted(set(ea.Tags()[kind]) ^ set(eb.Tags()[kind]))}")
    ta = {t for t in ea.Tags()["scalars"] if t not in WALL_CLOCK}
    tb = {t for t in eb.Tags()["scalars"] if t not in WALL_CLOCK}
    if ta != tb:
        problems.append(f"scalar tags differ: {sorted(ta ^ tb)}")
    n, worst = 0, 0.0
    for tag in sorted(ta & tb):
        xa = [(e.step, e.value) for e in ea.Scalars(tag)]
        xb = [(e.step, e.value) for e in eb.Scalars(tag)]
        if [s for s, _ in xa] != [s for s, _ in xb]:
            problems.append(f"{tag}: steps differ ({[s for s, _ in xa]} vs {[s for s, _ in xb]})")
            continue
        for (_, va), (_, vb) in zip(xa, xb, strict=True):
            n += 1
            if math.isnan(va) and math.isnan(vb):
                continue
            worst = max(worst, abs(va - vb)) if not (math.isnan(va) or math.isnan(vb)) else math.inf
    return len(ta & tb), n, worst, problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    ra, rb = runs_under(Path(argv[0])), runs_under(Path(argv[1]))
    if not ra or set(ra) != set(rb):
        print(f"the two dirs hold different runs: {sorted(ra)} vs {sorted(rb)}", file=sys.stderr)
        return 1
    ok = True
    for name in sorted(ra):
        tags, values, worst, problems = compare(ra[name], rb[name])
        same = worst == 0 and not problems
        ok &= same
        print(f"{name}: {tags} scalar tags, {values} values compared (wall-clock tags {', '.join(WALL_CLOCK)} "
              f"left out); max abs difference {worst:g}; {'identical' if same else 'DIFFERENT'}")
        for p in problems:
            print(f"  {p}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
