"""Recording hooks: every layer of an :class:`~capgap.agents.ActorCritic` of any family, named by
module path (``trunk.0``, ``trunk.0.2.conv1``, ``pi``, ``v``), its output kept as (B, D) rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from capgap.eval.inspect.common import InspectError


def layer_names(agent: nn.Module) -> list[str]:
    """Every layer whose output :class:`Recorder` can record, in forward order: each module by its
    path, except containers (``nn.Sequential``) and ``nn.Flatten`` (the previous layer, reshaped).
    A residual block is a layer (its output, the residual stream) and so are its convolutions."""
    return [name for name, mod in agent.named_modules()
            if name and not isinstance(mod, (nn.Sequential, nn.Flatten))]


def module(agent: nn.Module, layer: str) -> nn.Module:
    """The module of ``layer`` (a name of :func:`layer_names`); a one-line error listing them if unknown."""
    modules = dict(agent.named_modules())
    if layer not in modules or layer not in layer_names(agent):
        raise InspectError(f"unknown layer {layer!r}; layers: {', '.join(layer_names(agent))}")
    return modules[layer]


class Recorder:
    """Forward hooks that keep the last output of the chosen layers (default: all), flattened to
    (B, D) float32 in the layer's logical (C, H, W) order::

        with Recorder(agent) as rec:
            agent(obs)
        rec.last["trunk.0"]   # (B, m * S * S)

    Use it as a context manager: the hooks are removed on exit.
    """

    def __init__(self, agent: nn.Module, layers: list[str] | None = None) -> None:
        self.agent = agent
        self.layers = list(layers) if layers is not None else layer_names(agent)
        self.modules = {name: module(agent, name) for name in self.layers}
        self.last: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        """Each recorded layer's output shape, without the batch dimension."""
        self._handles: list[Any] = []

    def __enter__(self) -> Recorder:
        for name, mod in self.modules.items():
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.last[name] = output.detach().reshape(output.shape[0], -1).float()
            self.shapes[name] = tuple(output.shape[1:])
        return hook


@torch.no_grad()
def first_acts(agent: nn.Module, first_obs: np.ndarray, layers: list[str]) -> dict[str, torch.Tensor]:
    """Each layer's activations (N, D) on the observations ``first_obs``, plus ``obs`` (the planes
    themselves, flattened): one batched forward pass. On a :class:`~capgap.eval.inspect.play.Played`'s
    ``first_obs`` this is ``Played.first(layer)`` (the policy's first step), for any network, trained or not."""
    obs = torch.as_tensor(first_obs)
    with Recorder(agent, layers) as rec:
        agent(obs)
    return {"obs": obs.reshape(len(obs), -1).float(), **rec.last}
