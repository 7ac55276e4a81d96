"""A whole quantized model on the simulated array: every GEMM on the RTL, the rest (bias,
requantization, ReLU, pooling, im2col; a Transformer's softmax, LayerNorm, residual adds) on the
host exactly as the integer reference.

The integer reference is :class:`hwprune.quant.QuantModel` (conv/linear chains) or
:class:`hwprune.quant.QuantTransformer`; their ``run(x, gemm=...)`` takes the function that does
each GEMM, so the only thing done here is passing a simulation instead of ``reference_outputs``:
the host steps are the reference's own code.  An attention product (Q·Kᵀ, A·V) runs dense with
its second operand in the weight memory, its groups (batch × heads) in passes like any grouped
layer.  A layer whose operands do not fit the array's
memories at once runs in the schedule's passes (:mod:`hwprune.sim.dma`), loads and stores
included, and is checked bit- and cycle-exact against the cost model's total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwprune.config import ArrayConfig, load_array
from hwprune.errors import VerificationError
from hwprune.ir import LayerSpec
from hwprune.sim.core import simulate

__all__ = ["LayerOnRtl", "ModelRun", "run_model"]


@dataclass(frozen=True, slots=True)
class LayerOnRtl:
    """One layer of a model run: its GEMM, the passes it took, simulated and predicted cycles."""

    name: str
    M: int
    K: int
    N: int
    passes: int
    cycles: int
    predicted_cycles: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "M": self.M, "K": self.K, "N": self.N, "passes": self.passes,
                "cycles": self.cycles, "predicted_cycles": self.predicted_cycles}


@dataclass(frozen=True, slots=True)
class ModelRun:
    """The model's integer outputs from the simulated array and from the integer reference.

    ``output_scale`` is the real value of one output unit per channel: each output channel has
    its own (the last layer's per-channel weight scales), so predictions come from
    :attr:`logits`, not from the integers' argmax.
    """

    outputs: np.ndarray
    reference: np.ndarray
    layers: tuple[LayerOnRtl, ...]
    seconds: float
    output_scale: np.ndarray | None = None

    def _dequantized(self, out: np.ndarray) -> np.ndarray:
        scale = np.ones(1) if self.output_scale is None else np.asarray(self.output_scale)
        return out * scale.reshape((-1,) + (1,) * (out.ndim - 2))

    @property
    def logits(self) -> np.ndarray:
        """The simulated outputs dequantized (what a prediction is the argmax of)."""
        return self._dequantized(self.outputs)

    @property
    def reference_logits(self) -> np.ndarray:
        return self._dequantized(self.reference)

    @property
    def bit_exact(self) -> bool:
        return bool(np.array_equal(self.outputs, self.reference))

    @property
    def cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def predicted_cycles(self) -> int:
        return sum(layer.predicted_cycles for layer in self.layers)

    def to_dict(self) -> dict[str, object]:
        return {"bit_exact": self.bit_exact, "cycles": self.cycles, "predicted_cycles": self.predicted_cycles,
                "seconds": self.seconds, "layers": [layer.to_dict() for layer in self.layers]}


def _layer_on_rtl(spec: LayerSpec, weights: np.ndarray, acts: np.ndarray, pattern, array: ArrayConfig,
                  backend: str) -> tuple[np.ndarray, LayerOnRtl]:
    """Array outputs (groups, M, N/groups) of one layer, in the schedule's passes."""
    res = simulate(spec, weights, acts, pattern, array, backend=backend)
    out = res.outputs_int32.astype(np.int64)
    return out if out.ndim == 3 else out[None], LayerOnRtl(spec.name, spec.M, spec.K, spec.N, res.passes,
                                                          res.cycles, res.predicted_cycles)


def run_model(qmodel, x_int: np.ndarray, array: ArrayConfig | str, *, backend: str = "verilator",
              verify: bool = True, on_layer: Callable[[LayerOnRtl], None] | None = None) -> ModelRun:
    """Run ``qmodel`` (a :class:`hwprune.quant.QuantModel` or
    :class:`~hwprune.quant.QuantTransformer`) on integer inputs ``x_int`` (batch first, from
    ``qmodel.quantize_input``) with every GEMM on the simulated array.

    Each layer's operands are the previous *simulated* layer's outputs, requantized on the host;
    every layer is checked bit- and cycle-exact as it runs.  ``on_layer`` is called with each
    finished layer (for progress bars).

    Raises
    ------
    VerificationError
        With ``verify``: a layer is not bit- or cycle-exact (raised by the simulation), or the
        model's outputs differ from the integer reference.
    """
    array = load_array(array)
    t0 = time.perf_counter()
    x = np.asarray(x_int, dtype=np.int64)
    ref = qmodel.run(x)
    layers: list[LayerOnRtl] = []

    def on_rtl(spec: LayerSpec, weights: np.ndarray, acts: np.ndarray, pattern) -> np.ndarray:
        acc, info = _layer_on_rtl(spec, weights, acts, pattern, array, backend)
        layers.append(info)
        if on_layer is not None:
            on_layer(info)
        return acc

    out = qmodel.run(x, gemm=on_rtl).output
    result = ModelRun(out, ref.output, tuple(layers), time.perf_counter() - t0, qmodel.output_scale)
    if verify and not result.bit_exact:
        raise VerificationError(f"model outputs on the RTL differ from the integer reference in "
                                f"{int((result.outputs != result.reference).sum())} places")
    return result
