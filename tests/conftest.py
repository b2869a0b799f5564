"""Shared test setup: one torch thread per test process (pytest-xdist runs one process per core)."""

from __future__ import annotations

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
