"""Physical channel removal: a channel-pruned model becomes a smaller dense model.

Uses Torch-Pruning's dependency graph (Fang et al., CVPR 2023, ``torch-pruning`` on PyPI):
removing a conv's output channels also removes the matching batch-norm entries, the next
layer's input channels (including through ``flatten`` into a linear layer) and keeps residual
additions and concatenations consistent.  We checked it imports and prunes with torch 2.13;
writing that dependency tracing ourselves would duplicate a maintained library.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..train import clone_model
from .engine import apply_masks, current_masks, layer_graph, make_permanent, prunable_layers
from .method import as_matrix

__all__ = ["shrink_channels", "removed_channels"]


def removed_channels(masks: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Output channels (rows) whose whole N×K mask row is zero, per layer."""
    return {n: np.flatnonzero(~m.any(axis=1)).tolist() for n, m in masks.items() if not m.any(axis=1).all()}


def _coupled_alive(group, module: nn.Module) -> list[str]:
    """Other layers whose output channels this removal would drag along although they are live.

    A residual addition (or concatenation) couples channels of several producers; removing a
    channel is exact only if every coupled producer outputs zero there as well.
    """
    alive = []
    for dep, idxs in group:
        m = dep.target.module
        if m is module or getattr(dep.handler, "__name__", "") != "prune_out_channels":
            continue
        if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            continue
        rows = [int(i) for i in idxs]
        for pname in ("weight", "bias"):
            p = getattr(m, pname, None)
            if p is not None and bool(p.detach()[rows].abs().sum() > 0):
                alive.append(dep.target.name if hasattr(dep.target, "name") else type(m).__name__)
                break
    return alive


def shrink_channels(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], *,
                    strict: bool = False) -> nn.Module:
    """A copy of ``model`` with every all-zero output channel physically removed.

    Channels of the layer computing the model's output are never removed, nor channels coupled
    (by a residual addition or concatenation) to a producer whose channel is still live: those
    layers keep their shape and their masks.  Masks that remain (e.g. N:M on the surviving
    channels) are re-applied with ``torch.nn.utils.prune`` on the smaller weights, so the shrunk
    model computes exactly what the masked model computes.

    Raises
    ------
    ConfigError
        If ``torch-pruning`` is not installed, a layer type it cannot shrink has zero rows, or
        (``strict``) a layer's channels could not be removed because of a coupling.
    """
    try:
        import torch_pruning as tp
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("physical channel removal needs torch-pruning: pip install torch-pruning") from None
    masks = current_masks(model)
    out = clone_model(model)
    targets = prunable_layers(out)
    order, _ = layer_graph(out, example_inputs, targets)
    make_permanent(out)
    out.eval()
    remove = removed_channels(masks)
    if order:
        remove.pop(order[-1], None)
    dg = tp.DependencyGraph().build_dependency(out, example_inputs=example_inputs)
    for name, idxs in remove.items():
        module = targets[name].module
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            fn = tp.prune_conv_out_channels
        elif isinstance(module, nn.Linear) and targets[name].param == "weight":
            fn = tp.prune_linear_out_channels
        else:
            raise ConfigError(f"cannot physically remove channels of {name!r} ({type(module).__name__})")
        if len(idxs) >= module.weight.shape[0]:
            raise ConfigError(f"layer {name!r} has every channel pruned; nothing would be left")
        group = dg.get_pruning_group(module, fn, idxs=idxs)
        if not dg.check_pruning_group(group):
            raise ConfigError(f"torch-pruning refused to remove channels {idxs} of {name!r}")
        coupled = _coupled_alive(group, module)
        if coupled:
            if strict:
                raise ConfigError(f"cannot remove channels of {name!r}: they are coupled (residual or "
                                  f"concatenation) to live channels of {', '.join(coupled)}")
            continue  # stays masked at full width: exact, just not smaller
        group.prune()
    # re-apply what is left of the masks on the shrunk weights: zeros that are not whole rows
    rest = {}
    for name, t in prunable_layers(out).items():
        if name in masks:
            nz = as_matrix(getattr(t.module, t.param).detach()) != 0
            if not bool(nz.all()):
                rest[name] = nz.numpy()
    # (a surviving weight that is exactly 0.0 is indistinguishable from a pruned one: harmless)
    apply_masks(out, rest)
    return out
