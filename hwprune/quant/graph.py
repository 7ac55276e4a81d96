"""A float model as the chain of steps the int8 array pipeline runs.

:func:`float_steps` traces a ``torch.nn.Module`` with ``torch.fx`` and returns its computation as
a straight chain of :data:`Step` values: :class:`Gemm` (a conv or linear layer, BatchNorm folded
in), :class:`Relu`, :class:`MaxPool` and :class:`Flatten`; dropout and identities vanish.  Each
step consumes the previous one's output, which is what a layer-by-layer accelerator runs and what
the integer reference (:mod:`hwprune.quant.model`) quantizes.  Anything else — a residual add, a
second input, attention — raises :class:`~hwprune.errors.UnsupportedLayerError` naming the node.

The chain runs in float through :func:`run_float` (the calibration pass and the float reference
of the folded graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UnsupportedLayerError

__all__ = ["Flatten", "Gemm", "MaxPool", "Relu", "Step", "float_steps", "run_float"]


@dataclass(frozen=True, slots=True)
class Gemm:
    """A conv or linear layer with BatchNorm folded in (``weight`` in PyTorch's own shape)."""

    name: str
    weight: np.ndarray              # (N, C/groups, kh, kw) or (N, K), float64
    bias: np.ndarray                # (N,), float64
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    folded_bn: str | None = None    # the BatchNorm module folded in, if any

    @property
    def is_conv(self) -> bool:
        return self.weight.ndim > 2

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def matrix(self) -> np.ndarray:
        """The weight as N×K (K ordered channel, kernel row, kernel column: the im2col order)."""
        return self.weight.reshape(self.out_channels, -1)


@dataclass(frozen=True, slots=True)
class Relu:
    """max(x, 0)."""


@dataclass(frozen=True, slots=True)
class MaxPool:
    """2-D max pooling (PyTorch semantics; padding pads with −∞)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False


@dataclass(frozen=True, slots=True)
class Flatten:
    """Flatten every dimension after the batch."""


Step = Gemm | Relu | MaxPool | Flatten


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _gemm(name: str, module: nn.Module) -> Gemm:
    w = module.weight.detach().double().numpy().copy()
    b = (module.bias.detach().double().numpy().copy() if module.bias is not None
         else np.zeros(w.shape[0]))
    if isinstance(module, nn.Linear):
        return Gemm(name, w, b)
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise UnsupportedLayerError(f"{name}: conv padding {module.padding!r} / mode "
                                    f"{module.padding_mode!r} (only numeric zero padding)")
    if isinstance(module, nn.Conv1d):
        w = w[:, :, None, :]
        return Gemm(name, w, b, (1, module.stride[0]), (0, module.padding[0]), (1, module.dilation[0]),
                    module.groups)
    return Gemm(name, w, b, tuple(module.stride), tuple(module.padding), tuple(module.dilation),
                module.groups)


def _fold_bn(g: Gemm, name: str, bn: nn.modules.batchnorm._BatchNorm) -> Gemm:
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedLayerError(f"{name}: BatchNorm without running statistics cannot be folded")
    gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(g.out_channels)
    beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(g.out_channels)
    mean = bn.running_mean.detach().double().numpy()
    inv = gamma / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    shape = (-1,) + (1,) * (g.weight.ndim - 1)
    # zeros stay zeros: the fold scales whole output channels
    return Gemm(g.name, g.weight * inv.reshape(shape), (g.bias - mean) * inv + beta, g.stride,
                g.padding, g.dilation, g.groups, name)


_RELU_FUNCS = {torch.relu, F.relu, torch.relu_}
_FLATTEN_FUNCS = {torch.flatten}
_SKIP_MODULES = (nn.Dropout, nn.Identity)


def _describe(node: torch.fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
    return f"{node.op} {target!r} ({node.name})"


def float_steps(model: nn.Module) -> tuple[Step, ...]:
    """Trace ``model`` (no masks: call ``make_permanent`` first) into a chain of steps.

    Raises
    ------
    UnsupportedLayerError
        The model is not a single chain of conv/linear/BatchNorm/ReLU/max-pool/flatten, or fx
        cannot trace it; the message names the first offending node.
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx fails in many ways on data-dependent code
        raise UnsupportedLayerError(f"{type(model).__name__} cannot be traced by torch.fx: "
                                    f"{type(exc).__name__}: {exc}") from None
    modules = dict(gm.named_modules())
    steps: list[Step] = []
    previous: torch.fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise UnsupportedLayerError(f"{type(model).__name__}: more than one input ({node.name})")
            previous = node
            continue
        if node.op == "output":
            break
        if node.op == "get_attr":
            raise UnsupportedLayerError(f"{type(model).__name__}: parameter read outside a layer: "
                                        f"{_describe(node)}")
        inputs = [a for a in node.all_input_nodes]
        if inputs != [previous]:
            raise UnsupportedLayerError(f"{type(model).__name__}: {_describe(node)} is not part of a "
                                        "single chain of layers (a skip connection or a second input)")
        step = _step(node, modules, steps)
        if step is not None:
            steps.append(step)
        previous = node
    if not any(isinstance(s, Gemm) for s in steps):
        raise UnsupportedLayerError(f"{type(model).__name__} has no conv or linear layer to quantize")
    return tuple(_fuse_bn_marker(steps))


class _BatchNorm:
    """Placeholder while tracing: folded into the preceding Gemm by :func:`_fuse_bn_marker`."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module = name, module


def _step(node: torch.fx.Node, modules: dict[str, nn.Module], steps: list) -> object:
    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            return _gemm(node.target, mod)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return _BatchNorm(node.target, mod)
        if isinstance(mod, nn.ReLU):
            return Relu()
        if isinstance(mod, nn.MaxPool2d):
            if mod.return_indices:
                raise UnsupportedLayerError(f"{node.target}: max-pool returning indices")
            return MaxPool(_pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size), _pair(mod.padding),
                           _pair(mod.dilation), bool(mod.ceil_mode))
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise UnsupportedLayerError(f"{node.target}: flatten({mod.start_dim}, {mod.end_dim})")
            return Flatten()
        if isinstance(mod, _SKIP_MODULES):
            return None
        raise UnsupportedLayerError(f"{node.target}: {type(mod).__name__} has no integer kernel "
                                    "(supported: Conv1d/2d, Linear, BatchNorm, ReLU, MaxPool2d, Flatten)")
    if node.op == "call_function" and node.target in _RELU_FUNCS:
        return Relu()
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return Relu()
    if (node.op == "call_method" and node.target == "flatten") or (
            node.op == "call_function" and node.target in _FLATTEN_FUNCS):
        args = list(node.args[1:]) + [node.kwargs.get("start_dim", None)]
        start = next((a for a in args if a is not None), 0)
        if start != 1 or node.kwargs.get("end_dim", -1) != -1 or len(node.args) > 2:
            raise UnsupportedLayerError(f"{_describe(node)}: only flatten(1) is supported")
        return Flatten()
    if node.op == "call_function" and node.target is F.dropout:
        return None
    raise UnsupportedLayerError(f"{_describe(node)} has no integer kernel (supported: Conv1d/2d, "
                                "Linear, BatchNorm, ReLU, MaxPool2d, flatten)")


def _fuse_bn_marker(steps: list) -> list[Step]:
    out: list[Step] = []
    for s in steps:
        if isinstance(s, _BatchNorm):
            if not out or not isinstance(out[-1], Gemm) or out[-1].folded_bn is not None:
                raise UnsupportedLayerError(f"{s.name}: BatchNorm that does not follow a conv or "
                                            "linear layer cannot be folded")
            out[-1] = _fold_bn(out[-1], s.name, s.module)
        else:
            out.append(s)
    return out


def _torch_step(step: Step, x: torch.Tensor) -> torch.Tensor:
    if isinstance(step, Gemm):
        w, b = torch.from_numpy(step.weight).to(x.dtype), torch.from_numpy(step.bias).to(x.dtype)
        if not step.is_conv:
            return F.linear(x, w, b)
        if x.ndim == 3:  # Conv1d stored as height-1 conv2d
            return F.conv2d(x[:, :, None, :], w, b, step.stride, step.padding, step.dilation,
                            step.groups)[:, :, 0, :]
        return F.conv2d(x, w, b, step.stride, step.padding, step.dilation, step.groups)
    if isinstance(step, Relu):
        return torch.relu(x)
    if isinstance(step, MaxPool):
        return F.max_pool2d(x, step.kernel, step.stride, step.padding, step.dilation, step.ceil_mode)
    return x.flatten(1)


def run_float(steps: Sequence[Step], x: torch.Tensor, *, record: bool = False
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the chain in the dtype of ``x``; with ``record``, also every step's output."""
    outs = []
    with torch.no_grad():
        for step in steps:
            x = _torch_step(step, x)
            if record:
                outs.append(x)
    return x, outs
