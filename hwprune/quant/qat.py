"""Quantization-aware fine-tuning (straight-through estimator), for when post-training int8 loses.

The float chain (BatchNorm folded, :mod:`hwprune.quant.graph`) becomes a module whose forward
pass rounds exactly where the integer reference does: weights per output channel to
``weight_bits`` (scale from the current weights, as :func:`~hwprune.quant.model.quantize_weights`),
the network input and every requantized layer output to ``act_bits`` with the activation scales
post-training calibration chose.  Rounding is the identity in the backward pass (Bengio et al.'s
straight-through estimator), so the optimizer learns weights that survive rounding.  Pruned
weights stay exactly zero (the mask multiplies the weights in every step).  The fine-tuned chain is
then quantized again with :func:`~hwprune.quant.model.quantize_steps` (keeping the activation scales
it was trained with): the result is an ordinary :class:`~hwprune.quant.QuantModel`, and the
integer reference stays the one definition.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import ArrayConfig, load_array
from ..patterns import SparsityPattern
from .calibrate import Calibration, calibration_inputs
from .graph import Gemm, MaxPool, Relu, Step, float_steps
from .model import QuantModel, _float_model, quantize_steps

__all__ = ["FakeQuantChain", "qat_quantize"]


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _fake_quant(x: torch.Tensor, scale: float, lo: int, hi: int) -> torch.Tensor:
    return torch.clamp(_round_ste(x / scale), lo, hi) * scale


class FakeQuantChain(nn.Module):
    """The float chain with fake quantization where the integer reference rounds (see module doc)."""

    def __init__(self, steps: tuple[Step, ...], q: QuantModel) -> None:
        super().__init__()
        self.steps = steps
        self.input_scale = q.input_scale
        self.out_scales = {lay.name: lay.output_scale for lay in q.layers}
        self.qmax = (1 << (q.weight_bits - 1)) - 1
        self.act_lo, self.act_hi = q.act_range
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for s in steps:
            if isinstance(s, Gemm):
                self.weights.append(nn.Parameter(torch.from_numpy(s.weight).float()))
                self.biases.append(nn.Parameter(torch.from_numpy(s.bias).float()))
                self.register_buffer(f"mask_{len(self.weights) - 1}", torch.from_numpy(s.weight != 0).float())

    def _weight(self, i: int) -> torch.Tensor:
        w = self.weights[i] * getattr(self, f"mask_{i}")
        flat = w.reshape(w.shape[0], -1)
        scale = (flat.abs().amax(dim=1).detach() / self.qmax).clamp_min(1e-12)
        shape = (-1,) + (1,) * (w.ndim - 1)
        return torch.clamp(_round_ste(w / scale.reshape(shape)), -self.qmax, self.qmax) * scale.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _fake_quant(x, self.input_scale, self.act_lo, self.act_hi)
        k, i = 0, 0
        while i < len(self.steps):
            s = self.steps[i]
            if isinstance(s, Gemm):
                w, b = self._weight(k), self.biases[k]
                x = (F.conv2d(x, w, b, s.stride, s.padding, s.dilation, s.groups) if s.is_conv
                     else F.linear(x, w, b))
                relu = i + 1 < len(self.steps) and isinstance(self.steps[i + 1], Relu)
                if relu:
                    x = torch.relu(x)
                    i += 1
                scale = self.out_scales[s.name]
                if scale is not None:
                    x = _fake_quant(x, scale, 0 if relu else self.act_lo, self.act_hi)
                k += 1
            elif isinstance(s, Relu):
                x = torch.relu(x)
            elif isinstance(s, MaxPool):
                x = F.max_pool2d(x, s.kernel, s.stride, s.padding, s.dilation, s.ceil_mode)
            else:
                x = x.flatten(1)
            i += 1
        return x

    def float_steps(self) -> tuple[Step, ...]:
        """The fine-tuned chain (masked float weights), ready for :func:`quantize_steps`."""
        out, k = [], 0
        for s in self.steps:
            if isinstance(s, Gemm):
                w = (self.weights[k] * getattr(self, f"mask_{k}")).detach().double().numpy()
                b = self.biases[k].detach().double().numpy()
                out.append(Gemm(s.name, np.array(w), np.array(b), s.stride, s.padding, s.dilation, s.groups,
                                s.folded_bn))
                k += 1
            else:
                out.append(s)
        return tuple(out)


def qat_quantize(model: nn.Module, data: object, *, epochs: int = 2, lr: float | None = None,
                 calib: int = 256, calibration: Calibration | str = "percentile", percentile: float = 99.99,
                 array: ArrayConfig | str | None = None,
                 patterns: Mapping[str, SparsityPattern | str] | None = None, seed: int = 0) -> QuantModel:
    """Post-training quantization, ``epochs`` of straight-through fine-tuning on ``data`` (a
    workload: its train batches and loss), then quantization of the fine-tuned chain.

    ``lr`` defaults to the workload's fine-tuning rate.  The activation scales are calibrated once,
    before fine-tuning, and kept.  The model is not modified.
    """
    from ..train import train
    from ..workload import as_workload

    workload = as_workload(data, what="QAT data")
    calib_cfg = calibration if isinstance(calibration, Calibration) else Calibration(calibration, percentile)
    cfg = load_array(array) if array is not None else None
    steps = float_steps(_float_model(model))
    x = calibration_inputs(workload, calib, seed=seed).double()
    q0 = quantize_steps(steps, x, calibration=calib_cfg, array=cfg, patterns=patterns)
    chain = FakeQuantChain(steps, q0)
    rate = lr if lr is not None else workload.finetune_lr
    train(chain, workload, epochs=epochs, lr=rate, seed=seed)
    scales = {"input": q0.input_scale, **{lay.name: lay.output_scale for lay in q0.layers
                                           if lay.output_scale is not None}}
    return quantize_steps(chain.float_steps(), x, calibration=calib_cfg, array=cfg, patterns=patterns,
                          scales=scales)
