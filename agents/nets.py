"""Actor-critic networks on one ladder of rungs (the network size).

Scaling rule: **width multiplier m at fixed depth**, as scaling studies do. Every rung has the
same architecture; only m changes.

* ``conv`` (default): three 3×3 convolutions of m channels (the last with stride 2), a dense
  layer of 4m units, then a policy head (4 logits) and a value head. Parameters grow ~ m².
* ``mlp``: two dense layers of 8m units on the flattened planes, then the same heads.
* ``impala``: the residual network of IMPALA (Espeholt et al. 2018), which Langosco et al. 2022
  and the procgen-maze interpretability work trained: three stages of (3×3 convolution, 3×3 max
  pool with stride 2, two residual blocks of two 3×3 convolutions), with m, 2m, 2m channels,
  then a dense layer of 8m units and the same heads. Parameters grow ~ m².

``LADDER`` names the rungs; a rung is addressed by name (``"small"``) or index (``3``).
``capgap rungs --env <id>`` prints the exact parameter counts for an env.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from capgap.envs import DialError

LADDER: tuple[tuple[str, int], ...] = (
    ("nano", 2), ("micro", 4), ("tiny", 8), ("small", 16), ("base", 32), ("large", 72),
)
"""(name, width multiplier m) for each rung, smallest first."""
FAMILIES = ("conv", "mlp", "impala")


@dataclass(frozen=True)
class Rung:
    index: int
    name: str
    m: int


def rung(name_or_index: str | int) -> Rung:
    """Resolve a rung by index (``3``, ``"3"``) or name (``"small"``), with a one-line error."""
    names = [n for n, _ in LADDER]
    key = str(name_or_index).strip()
    if key.lstrip("-").isdigit():
        i = int(key)
        if not 0 <= i < len(LADDER):
            raise DialError(f"rung {name_or_index!r} is out of range; rungs are 0..{len(LADDER) - 1} "
                            f"or {', '.join(names)}")
    elif key in names:
        i = names.index(key)
    else:
        raise DialError(f"unknown rung {name_or_index!r}; rungs are 0..{len(LADDER) - 1} or {', '.join(names)}")
    return Rung(i, *LADDER[i])


def _init(layer: nn.Module, gain: float = math.sqrt(2)) -> nn.Module:
    """Orthogonal weights, zero bias (the PPO implementation-detail default)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), both 3×3 with the input's channels (IMPALA's block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = _init(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv1 = _init(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


def impala_stage(c_in: int, c_out: int) -> nn.Sequential:
    """One IMPALA stage: a 3×3 convolution, a 3×3 max pool with stride 2, two residual blocks."""
    return nn.Sequential(_init(nn.Conv2d(c_in, c_out, 3, padding=1)), nn.MaxPool2d(3, stride=2, padding=1),
                         ResidualBlock(c_out), ResidualBlock(c_out))


class _FlattenKeepLayout(torch.autograd.Function):
    """``x.flatten(1)`` whose backward hands the gradient back in the input's channels-last layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.shape = x.shape
        return x.flatten(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


def flatten_keep_layout(x: torch.Tensor) -> torch.Tensor:
    """``x.flatten(1)``, the same numbers; for a channels-last image its gradient flows back channels-last,
    so the ReLU before it compares two tensors of one layout (a plain ``flatten`` mixes layouts there,
    and that backward ran ~20x slower: 5-8% of a ``small`` rung's update)."""
    try:
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:  # inside torch.func.vmap, which cannot query memory formats
        channels_last = False
    return _FlattenKeepLayout.apply(x) if channels_last else x.flatten(1)


class Flatten(nn.Flatten):
    """``nn.Flatten`` (so tools that skip flattening still recognise it) by :func:`flatten_keep_layout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flatten_keep_layout(x)


class ActorCritic(nn.Module):
    """Policy and value over uint8 observation planes (C, H, W).

    ``forward(obs)`` returns (logits (B, 4), value (B,)). Observations are scaled to [0, 1]
    per plane inside the network, so callers pass the env's uint8 tensor as it is.
    """

    def __init__(self, obs_shape: tuple[int, int, int], plane_high: np.ndarray | list[int], m: int,
                 family: str = "conv", num_actions: int = 4) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise DialError(f"unknown network family {family!r}; expected one of {', '.join(FAMILIES)}")
        c, h, w = obs_shape
        self.family, self.m = family, m
        self.channels_last = family != "mlp"
        """Convolve in oneDNN's fast channels-last layout (off inside ``torch.func.vmap``, which cannot)."""
        self.register_buffer("scale", 1.0 / torch.as_tensor(plane_high, dtype=torch.float32).view(1, c, 1, 1))
        if family == "impala":
            widths = (m, 2 * m, 2 * m)
            stages = [impala_stage(a, b) for a, b in zip((c, *widths[:-1]), widths, strict=True)]
            oh, ow = h, w
            for _ in stages:
                oh, ow = (oh - 1) // 2 + 1, (ow - 1) // 2 + 1
            hidden = 8 * m
            self.trunk = nn.Sequential(
                *stages, nn.ReLU(), Flatten(),
                _init(nn.Linear(widths[-1] * oh * ow, hidden)), nn.ReLU(),
            ).to(memory_format=torch.channels_last)
        elif family == "conv":
            oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            hidden = 4 * m
            self.trunk = nn.Sequential(
                _init(nn.Conv2d(c, m, 3, padding=1)), nn.ReLU(),
                _init(nn.Conv2d(m, m, 3, padding=1)), nn.ReLU(),
                _init(nn.Conv2d(m, m, 3, stride=2, padding=1)), nn.ReLU(),
                Flatten(),
                _init(nn.Linear(m * oh * ow, hidden)), nn.ReLU(),
            ).to(memory_format=torch.channels_last)  # oneDNN's fast layout for convolutions on CPU
        else:
            hidden = 8 * m
            self.trunk = nn.Sequential(
                nn.Flatten(),
                _init(nn.Linear(c * h * w, hidden)), nn.ReLU(),
                _init(nn.Linear(hidden, hidden)), nn.ReLU(),
            )
        self.pi = _init(nn.Linear(hidden, num_actions), gain=0.01)
        self.v = _init(nn.Linear(hidden, 1), gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float() * self.scale
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.trunk(x)
        return self.pi(z), self.v(z).squeeze(-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build(env_id: str, rung_: str | int, family: str = "conv", /, **dials) -> ActorCritic:
    """The network of ladder rung ``rung_`` (name or index) for a registered env (grid observations)."""
    from capgap.envs import observation_space, task_class

    task = task_class(env_id).from_dials(**dials)
    space = observation_space(task)
    high = [task.channel_high.get(c, 1) for c in task.channels]
    return ActorCritic(space.shape, high, rung(rung_).m, family)


def ladder_table(env_id: str, family: str = "conv", /, **dials) -> list[tuple[int, str, int, int]]:
    """(index, name, m, parameters) for every rung on an env."""
    return [(i, name, m, build(env_id, i, family, **dials).num_params()) for i, (name, m) in enumerate(LADDER)]
