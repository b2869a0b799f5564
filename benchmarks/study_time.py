"""Wall time of the studies users actually run, on the local backend with the default workers.

    python benchmarks/study_time.py quick            # make demo's sweep
    python benchmarks/study_time.py scaling          # CheeseCorner, rungs nano..small x 3 seeds, 1M steps
    python benchmarks/study_time.py certificate      # the learned certificate of the whole suite
    python benchmarks/study_time.py scaling --capgap ../old/.venv/bin/capgap --label "before"

Each study is the very command a user types (``capgap sweep ...`` / ``capgap certify --learned``),
run in a fresh temporary directory with ``--no-progress``. The benchmark prints one markdown row:
wall time, the CPU user and system seconds of the whole process tree (``RUSAGE_CHILDREN``: the
sweep and its workers), the system share, the trials, and the env-steps per second of each
training process (mean, min, max, from the runs' ``done.json``: the steps of all the seeds a
process trained, over its wall time, evaluation included; a process trains one seed, or a seed
group). ``--json FILE`` appends the row's numbers with the machine to FILE.

``--capgap`` picks the executable, so one script times two versions of the code on the same
machine (e.g. a checkout of an older commit with its own virtual environment).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDIES = {
    "quick": ["sweep", "--rungs", "1..4", "--seeds", "0..2", "--total-steps", "400000", "--eval-every", "100000",
              "--eval-episodes", "256", "--dials", "size=7", "max_steps=40"],
    "scaling": ["sweep", "--env", "capgap/CheeseCorner-v0", "--rungs", "nano,micro,tiny,small", "--seeds", "0..2"],
    "certificate": ["certify", "--learned"],
}
"""Each study's ``capgap`` command, less ``--out DIR`` and ``--no-progress``."""


def run_study(capgap: str, study: str, out: Path) -> dict:
    """Run one study into ``out``; its wall time, CPU split and per-trial speed."""
    cmd = [capgap, *STUDIES[study], "--out", str(out), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    trials = [json.loads(p.read_text()) for p in sorted(out.rglob("done.json"))]
    per_trial = [t["global_step"] * t.get("group_seeds", 1) / t["wall_s"] for t in trials]  # its process's speed
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"study": study, "command": " ".join(["capgap", *STUDIES[study], "--out", "DIR"]), "wall_s": wall,
            "user_s": user, "sys_s": system, "sys_share": system / max(user + system, 1e-9), "trials": len(trials),
            "steps": sum(t["global_step"] for t in trials), "sps_mean": sum(per_trial) / max(len(per_trial), 1),
            "sps_min": min(per_trial, default=0.0), "sps_max": max(per_trial, default=0.0)}


def machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=list(STUDIES))
    p.add_argument("--capgap", default=str(Path(sys.executable).with_name("capgap")),
                   help="the capgap executable to time (default: this environment's)")
    p.add_argument("--label", default="", help="a name for this code version in the table")
    p.add_argument("--keep", default=None, help="run the study here and keep it (default: a temporary dir)")
    p.add_argument("--json", default=None, help="append the result to this JSON-lines file")
    a = p.parse_args()
    if not shutil.which(a.capgap):
        sys.exit(f"no capgap executable at {a.capgap}; pass --capgap PATH (e.g. .venv/bin/capgap)")
    label = a.label or a.capgap
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.keep) if a.keep else Path(tmp) / a.study
        r = run_study(a.capgap, a.study, out)
    r.update(label=label, machine=machine(), date=time.strftime("%Y-%m-%d %H:%M"))
    print(f"machine: {r['machine']}; {r['command']}\n")
    print("| study | code | wall | CPU user s | CPU system s | system % | trials | env-steps/s per process "
          "(mean [min, max]) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    print(f"| {a.study} | {label} | {r['wall_s'] / 60:.1f} min | {r['user_s']:,.0f} | {r['sys_s']:,.0f} | "
          f"{100 * r['sys_share']:.1f}% | {r['trials']} | {r['sps_mean']:,.0f} [{r['sps_min']:,.0f}, "
          f"{r['sps_max']:,.0f}] |")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
