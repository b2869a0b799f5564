"""Shared test setup: one torch thread per test process (pytest-xdist runs one process per core).

With ``CAPGAP_DOCS_ENV=1`` the worked example of docs/adding_an_env.md is registered before the
tests are collected, exactly as the doc says to register it, so every env-parametrised test runs
on it too (``tests/test_docs.py`` runs the suite so)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

DOCS_EXAMPLE = Path(__file__).parent.parent / "docs" / "adding_an_env.md"


def register_docs_example() -> str:
    """Load the doc's env file (its first python block) as the module its first line names, and
    register it by the doc's ``TASKS`` line; returns the env id."""
    import capgap.envs as E

    blocks = re.findall(r"```python\n(.*?)```", DOCS_EXAMPLE.read_text(), re.S)
    source, registration = blocks[0], blocks[1]
    name = re.match(r"# envs/(\w+)\.py", source).group(1)
    module = types.ModuleType(f"capgap.envs.{name}")
    module.__package__ = "capgap.envs"
    sys.modules[module.__name__] = module  # dataclasses look the module up
    exec(compile(source, str(DOCS_EXAMPLE), "exec"), module.__dict__)
    env_id, cls = re.search(r'"(capgap/\w+-v\d+)": (\w+),', registration).groups()
    E.register(env_id, getattr(module, cls))
    return env_id


if os.environ.get("CAPGAP_DOCS_ENV"):
    register_docs_example()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run the full-scale science checks marked slow")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # the tests on the shared trained run go to one worker: it trains it once
        if "gmg_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("gmg_run"))
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


@pytest.fixture(scope="session")
def gmg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI-sized science run (``configs.GMG``: 262k steps of ``tiny`` on the 7x7 maze, with
    in-training inspection), trained once per test process and shared by tests/test_train.py and
    tests/test_inspect.py."""
    from configs import GMG

    from capgap.train.ppo import Args, train

    return train(Args(**GMG, out=str(tmp_path_factory.mktemp("gmg"))))


@pytest.fixture
def kill_and_rerun() -> Callable[[list[str], Path, int], None]:
    """The kill-then-resume helper (``_kill_and_rerun``) for resume tests."""
    return _kill_and_rerun
