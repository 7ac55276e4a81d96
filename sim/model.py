"""A whole quantized model on the simulated array: every conv/linear layer on the RTL, the rest
(bias, requantization, ReLU, pooling, im2col) on the host exactly as the integer reference.

The integer reference is :class:`hwprune.quant.QuantModel`; :meth:`QuantModel.next_activations`
turns a layer's array outputs into the next layer's operands, so the only thing done here is
replacing ``reference_outputs`` by a simulation.  A layer whose operands do not fit the array's
memories at once runs in row chunks (a sub-GEMM of consecutive output rows, all channels, all
K), each a separate run of the same design, each checked bit- and cycle-exact against its own
prediction; the cost model itself does not split layers into passes yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwprune.config import ArrayConfig, load_array
from hwprune.errors import UnsupportedLayerError, VerificationError
from hwprune.ir import LayerKind, LayerSpec
from hwprune.sim.core import simulate

__all__ = ["LayerOnRtl", "ModelRun", "run_model"]


@dataclass(frozen=True, slots=True)
class LayerOnRtl:
    """One layer of a model run: its GEMM, the row chunks it took, simulated and predicted cycles."""

    name: str
    M: int
    K: int
    N: int
    chunks: int
    cycles: int
    predicted_cycles: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "M": self.M, "K": self.K, "N": self.N, "chunks": self.chunks,
                "cycles": self.cycles, "predicted_cycles": self.predicted_cycles}


@dataclass(frozen=True, slots=True)
class ModelRun:
    """The model's integer outputs from the simulated array and from the integer reference."""

    outputs: np.ndarray
    reference: np.ndarray
    layers: tuple[LayerOnRtl, ...]
    seconds: float

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


def _chunk(spec: LayerSpec, rows: int) -> LayerSpec:
    kind = spec.kind if spec.groups > 1 else LayerKind.LINEAR
    return LayerSpec(f"{spec.name}[{rows}]", kind, rows, spec.K, spec.N, spec.groups, sparsity=spec.sparsity)


def _layer_on_rtl(spec: LayerSpec, weights: np.ndarray, acts: np.ndarray, pattern, array: ArrayConfig,
                  backend: str) -> tuple[np.ndarray, LayerOnRtl]:
    """Array outputs (groups, M, N/groups) of one layer, in as few row chunks as fit."""
    M = spec.M
    step = M
    while True:
        outs, cycles, predicted, r0 = [], 0, 0, 0
        try:
            while r0 < M:
                rows = min(step, M - r0)
                res = simulate(_chunk(spec, rows), weights, acts[:, r0:r0 + rows], pattern, array,
                               backend=backend)
                outs.append(res.outputs_int32.astype(np.int64))
                cycles += res.cycles
                predicted += res.predicted_cycles
                r0 += rows
            break
        except UnsupportedLayerError:
            if step <= array.rows:
                raise
            step = max(array.rows, (step // 2) // array.rows * array.rows)
    chunks = -(-M // step)
    return np.concatenate(outs, axis=1), LayerOnRtl(spec.name, M, spec.K, spec.N, chunks, cycles, predicted)


def run_model(qmodel, x_int: np.ndarray, array: ArrayConfig | str, *, backend: str = "verilator",
              verify: bool = True, on_layer: Callable[[LayerOnRtl], None] | None = None) -> ModelRun:
    """Run ``qmodel`` (a :class:`hwprune.quant.QuantModel`) on integer inputs ``x_int`` (batch
    first, from ``qmodel.quantize_input``) with every conv/linear layer on the simulated array.

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
    batch = x.shape[0]
    ref = qmodel.run(x)
    name, acts = ref.layers[0].name, ref.layers[0].acts      # the host's part before the first layer
    layers, out = [], None
    while True:
        q = qmodel.layer(name)
        acc, info = _layer_on_rtl(q.spec(batch), q.weight, acts, q.pattern, array, backend)
        layers.append(info)
        if on_layer is not None:
            on_layer(info)
        nxt = qmodel.next_activations(name, acc, batch)
        if nxt is None:
            out = qmodel.finish(q, acc, batch)             # the last layer's acc + bias is the output
            break
        name, acts = nxt
    result = ModelRun(out, ref.output, tuple(layers), time.perf_counter() - t0)
    if verify and not result.bit_exact:
        raise VerificationError(f"model outputs on the RTL differ from the integer reference in "
                                f"{int((result.outputs != result.reference).sum())} places")
    return result
