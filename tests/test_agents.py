"""The network ladder: rungs, parameter counts, addressing, and networks for every env."""

from __future__ import annotations

import itertools

import pytest
import torch

import capgap.envs as E
from capgap.agents import FAMILIES, LADDER, build, ladder_table, rung
from capgap.train.cli import main


def test_ladder_spans_three_orders_of_magnitude() -> None:
    # the 13×13 maze of the literature: 10^3 .. 10^6 parameters
    counts = [n for *_, n in ladder_table("capgap/CheeseCorner-v0", "conv", size=13)]
    assert len(counts) >= 6
    assert all(a < b for a, b in itertools.pairwise(counts)), counts
    assert counts[0] <= 1_000 and counts[-1] >= 1_000_000, counts
    # and on the default env (9×9) still three orders of magnitude
    default = [n for *_, n in ladder_table("capgap/CheeseCorner-v0")]
    assert all(a < b for a, b in itertools.pairwise(default)) and default[-1] >= 1_000 * default[0], default


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_ladder_increases(family: str) -> None:
    counts = [n for *_, n in ladder_table("capgap/CheeseCorner-v0", family)]
    assert all(a < b for a, b in itertools.pairwise(counts))


def test_impala_ladder_spans_three_orders_of_magnitude() -> None:
    for dials in ({}, {"size": 13}):
        counts = [n for *_, n in ladder_table("capgap/CheeseCorner-v0", "impala", **dials)]
        assert counts[-1] >= 1_000 * counts[0], counts


def test_impala_is_residual_with_max_pooling() -> None:
    net = build("capgap/CheeseCorner-v0", "nano", "impala")
    kinds = [type(m).__name__ for m in net.trunk.modules()]
    assert kinds.count("MaxPool2d") == 3 and kinds.count("ResidualBlock") == 6, kinds


def test_rungs_by_name_or_index() -> None:
    for i, (name, m) in enumerate(LADDER):
        assert rung(i) == rung(str(i)) == rung(name)
        assert rung(name).m == m
    for bad in ("7", "-1", "huge"):
        with pytest.raises(E.DialError, match=r"rungs are 0\.\.5 or nano, micro"):
            rung(bad)


@pytest.mark.parametrize("env_id", list(E.TASKS))
@pytest.mark.parametrize("family", FAMILIES)
def test_networks_take_every_env(env_id: str, family: str) -> None:
    core = E.make_core(env_id, 5)
    core.reset(0)
    net = build(env_id, "micro", family)
    logits, value = net(core.obs)
    assert logits.shape == (5, 4) and value.shape == (5,)
    assert torch.isfinite(logits).all() and torch.isfinite(value).all()


def test_rungs_command_prints_exact_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rungs", "--env", "capgap/CheeseCorner-v0"]) == 0
    out = capsys.readouterr().out
    for i, name, _, n in ladder_table("capgap/CheeseCorner-v0"):
        assert f"{name}" in out and f"{n:,}" in out, (i, name, n)
    assert main(["sizes", "--env", "capgap/CheeseCorner-v0"]) == 0, "the old command name is an alias"
    assert capsys.readouterr().out == out
