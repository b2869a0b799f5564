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


@pytest.mark.parametrize("family", ["conv", "impala"])
def test_layout_keeping_flatten_changes_no_number(family: str) -> None:
    """The trunk's Flatten hands gradients back channels-last (a speed fix); values and every gradient
    equal those of torch's nn.Flatten, and the gradient really comes back channels-last."""
    from torch import nn

    from capgap.agents.nets import Flatten, flatten_keep_layout

    torch.manual_seed(0)
    net = build("capgap/CheeseCorner-v0", "micro", family)
    plain = build("capgap/CheeseCorner-v0", "micro", family)
    plain.load_state_dict(net.state_dict())
    i = next(i for i, m in enumerate(plain.trunk) if isinstance(m, Flatten))
    plain.trunk[i] = nn.Flatten()
    obs = torch.randint(0, 2, (32, 3, 9, 9), dtype=torch.uint8)
    for model in (net, plain):
        logits, value = model(obs)
        (logits.logsumexp(-1) + value).sum().backward()
    torch.testing.assert_close(net(obs), plain(obs), rtol=0, atol=0)
    for (name, p), q in zip(net.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    flatten_keep_layout(x).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last) and not x.grad.is_contiguous()
