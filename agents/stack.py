"""Several seeds of one network, trained as one batched computation.

The smallest rungs are overhead-bound: a forward pass of a few thousand parameters costs about
as much in Python, dispatch and kernel launches as one of ten times the size. ``SeedStack``
holds S networks of one architecture (one per training seed) with every parameter stacked
along a new leading dimension, and evaluates all S on their own inputs in one call of
*grouped layers*: the seeds' feature maps side by side as channel groups of one image
(B, S·C, H, W) in the channels-last layout, each convolution one grouped convolution
(``groups=S``), each dense layer one batched matmul over (S, B, F). ``torch.func.vmap`` over
``functional_call`` computes the same but cannot use the channels-last layout; it stays as the
reference (``SeedStack.grouped = False``; ``benchmarks/group_speed.py`` times both). Since the
seeds' parameters are disjoint slices,
the gradient of a sum of per-seed losses is each seed's own gradient, and an elementwise
optimizer (Adam) updates every slice exactly as it would update that seed's separate network.

    nets = [build(env, "tiny") for seed in seeds]  # each initialised under its own seed
    stack = SeedStack(nets)
    logits, value = stack(obs)                     # obs (S, B, C, H, W) -> (S, B, 4), (S, B)
    stack.network(1)                               # seed 1's network, as a plain ActorCritic
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .nets import ActorCritic, ResidualBlock, flatten_keep_layout


class SeedStack(nn.Module):
    """S networks of one architecture as stacked parameters, evaluated with one batched call.

    ``parameters()`` are the stacked tensors (S, ...), in the order of the template network's
    own ``parameters()``; slice ``s`` of each is seed ``s``'s network (:meth:`network`,
    :meth:`state_of`, :meth:`load_state_of`).
    """

    grouped = True
    """Grouped layers (default), or ``torch.func.vmap`` over ``functional_call`` (the reference)."""

    def __init__(self, nets: list[ActorCritic]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("SeedStack needs at least one network")
        self.size = len(nets)
        template = copy.deepcopy(nets[0])
        template.channels_last = False  # the reference path, vmap, cannot query memory formats
        self._template = [template]  # a list: the template's own parameters are not this module's
        self.names = [n for n, _ in template.named_parameters()]
        stacked = [torch.stack([dict(net.named_parameters())[n].detach() for net in nets]) for n in self.names]
        self.stacked = nn.ParameterList(nn.Parameter(t.clone()) for t in stacked)
        self._call = vmap(self._one, in_dims=(0, 0))

    @property
    def template(self) -> ActorCritic:
        return self._template[0]

    def _one(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_call(self.template, params, (obs,))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (S, B, ...) -> logits (S, B, A), value (S, B): seed s's network on obs[s]."""
        params = dict(zip(self.names, self.stacked, strict=True))
        if not self.grouped:
            return self._call(params, obs)
        t = self.template
        S, B = obs.shape[:2]
        x = obs.float() * t.scale.unsqueeze(0)  # (S, B, C, H, W)
        if t.family != "mlp":  # the seeds' planes as channel groups of one image
            x = x.transpose(0, 1).reshape(B, S * x.shape[2], *x.shape[3:]).contiguous(memory_format=torch.channels_last)
        x = self._grouped(t.trunk, "trunk", params, x)
        return self._linear(params, "pi", x), self._linear(params, "v", x).squeeze(-1)

    def _grouped(self, module: nn.Module, name: str, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Apply ``module`` (at path ``name``) to all seeds at once: images (B, S·C, H, W), vectors (S, B, F)."""
        S = self.size
        if isinstance(module, nn.Sequential):
            for i, child in enumerate(module):
                x = self._grouped(child, f"{name}.{i}", params, x)
            return x
        if isinstance(module, ResidualBlock):
            h = self._grouped(module.conv0, f"{name}.conv0", params, torch.relu(x))
            return x + self._grouped(module.conv1, f"{name}.conv1", params, torch.relu(h))
        if isinstance(module, nn.Conv2d):
            w, b = params[f"{name}.weight"], params[f"{name}.bias"]
            return F.conv2d(x, w.reshape(-1, *w.shape[2:]), b.reshape(-1), module.stride, module.padding, groups=S)
        if isinstance(module, nn.ReLU):
            return torch.relu(x)
        if isinstance(module, nn.MaxPool2d):
            return F.max_pool2d(x, module.kernel_size, module.stride, module.padding)
        if isinstance(module, nn.Flatten):  # each seed's (C, H, W) flattened in nn.Flatten's order
            if x.dim() == 5:  # mlp: observations (S, B, C, H, W)
                return x.flatten(2)
            return flatten_keep_layout(x).reshape(x.shape[0], S, -1).transpose(0, 1)
        if isinstance(module, nn.Linear):
            return self._linear(params, name, x)
        raise TypeError(f"SeedStack has no grouped form of {type(module).__name__}")

    @staticmethod
    def _linear(params: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
        """Each seed's dense layer on its own rows: (S, B, F_in) -> (S, B, F_out)."""
        return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), x, params[f"{name}.weight"].transpose(1, 2))

    def to(self, *args, **kwargs) -> SeedStack:  # the template travels too (its buffers: the plane scale)
        super().to(*args, **kwargs)
        self._template[0] = self.template.to(*args, **kwargs)
        return self

    def state_of(self, s: int) -> dict[str, torch.Tensor]:
        """Seed ``s``'s network as a plain ``ActorCritic`` state dict (loadable by any run's tools)."""
        state = {k: v.clone() for k, v in self.template.state_dict().items()}
        for name, p in zip(self.names, self.stacked, strict=True):
            state[name] = p[s].detach().clone()
        return state

    def load_state_of(self, s: int, state: dict[str, torch.Tensor]) -> None:
        """Set seed ``s``'s slice from a plain ``ActorCritic`` state dict."""
        with torch.no_grad():
            for name, p in zip(self.names, self.stacked, strict=True):
                p[s].copy_(state[name])

    def network(self, s: int) -> ActorCritic:
        """A copy of seed ``s``'s network as a plain ``ActorCritic`` (for evaluation, inspection)."""
        net = copy.deepcopy(self.template)
        net.channels_last = net.family != "mlp"  # a plain network again: the fast layout where it applies
        net.load_state_dict(self.state_of(s))
        return net

    def grad_norms(self) -> torch.Tensor:
        """(S,) each seed's global gradient norm (over all its parameters)."""
        sq = [p.grad.pow(2).reshape(self.size, -1).sum(1) for p in self.stacked if p.grad is not None]
        return torch.stack(sq).sum(0).sqrt()

    def clip_grad_norms_(self, max_norm: float) -> torch.Tensor:
        """Clip each seed's gradient to global norm ``max_norm``, as ``nn.utils.clip_grad_norm_`` does
        for one network; returns the (S,) norms before clipping."""
        norms = self.grad_norms()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in self.stacked:
            if p.grad is not None:
                p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
        return norms

    def num_params(self) -> int:
        """Parameters of one seed's network."""
        return self.template.num_params()
