"""Shared test setup: one torch thread per test process (pytest-xdist runs one process per core)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run the full-scale science checks marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="full-scale science check: run with --runslow (CI runs the small version)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _kill_and_rerun(cmd: list[str], run_dir: Path, checkpoint_step: int) -> None:
    """Start ``cmd`` (a ``capgap train`` command line), SIGKILL it as soon as its checkpoint at
    ``checkpoint_step`` exists (before the run finishes), then run the same command to the end."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / f"step_{checkpoint_step:010d}.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "done.json").exists(), "killed too late to test resuming"
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def kill_and_rerun() -> Callable[[list[str], Path, int], None]:
    """The kill-then-resume helper (``_kill_and_rerun``) for resume tests."""
    return _kill_and_rerun
