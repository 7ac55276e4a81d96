"""Honest metrics of a (pruned) model, and a before/after comparison.

What is counted
---------------
* ``accuracy`` — top-1 on the task's test split.
* ``params_total`` / ``params_nonzero`` — every parameter of the model (a pruned weight counts
  once, as its masked value); buffers (batch-norm statistics, masks) are not parameters.
* ``bytes_fp32`` — all parameters as dense fp32.
* ``bytes_csr`` — prunable weights (N×K) as CSR: fp32 values + int32 column indices + int32
  row pointers (N + 1); all other parameters dense fp32.
* ``bytes_nm_int8`` — prunable weights as the reference array stores them: int8 values in
  n slots per group of m (= the array's group size) K positions, n being the layer's densest
  group (padding slots included), plus ⌈log2 m⌉ index bits per slot (none when n = m); other
  parameters fp32.
* ``macs_dense`` / ``macs_effective`` — multiply-accumulates of one inference (example inputs
  of batch 1; a graph task's whole graph), all GEMM-shaped layers including activation ×
  activation products; effective = non-zero weights only.  FLOPs = 2 × MACs.
* ``latency_ms`` — measured CPU inference time of one batch (64 test examples) of the model with
  its masks folded in (``prune.remove``), median of repeats, 1 thread; dense kernels, so
  unstructured zeros do not speed it up — only physically removed channels do.
* ``cycles`` / ``energy_pj`` — :func:`hwprune.cost.estimate_model` on the array with the
  model's actual masks (layers via :func:`hwprune.importers.from_torch`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ArrayConfig, index_bits, load_array
from .cost import ModelCost
from .errors import ConfigError
from .tasks import Task
from .train import clone_model, evaluate, refresh_pruned

__all__ = ["ModelMetrics", "Comparison", "measure", "compare", "param_counts", "storage_bytes",
           "inference_time", "hardware_cost"]


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """Metrics of one model (see the module docstring for definitions)."""

    accuracy: float | None
    params_total: int
    params_nonzero: int
    bytes_fp32: int
    bytes_csr: int
    bytes_nm_int8: int
    macs_dense: int
    macs_effective: int
    latency_ms: float | None
    array: str | None
    cycles: int | None
    energy_pj: float | None

    @property
    def flops_dense(self) -> int:
        return 2 * self.macs_dense

    @property
    def flops_effective(self) -> int:
        return 2 * self.macs_effective

    @property
    def density(self) -> float:
        return self.params_nonzero / self.params_total if self.params_total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flops_dense": self.flops_dense, "flops_effective": self.flops_effective,
                "density": self.density}


_ROWS = (  # (label, attribute, format, lower is better)
    ("accuracy (test)", "accuracy", "{:.2%}", False),
    ("parameters", "params_total", "{:,}", True),
    ("non-zero parameters", "params_nonzero", "{:,}", True),
    ("size fp32 dense (B)", "bytes_fp32", "{:,}", True),
    ("size CSR (B)", "bytes_csr", "{:,}", True),
    ("size N:M int8 (B)", "bytes_nm_int8", "{:,}", True),
    ("MACs dense", "macs_dense", "{:,}", True),
    ("MACs effective", "macs_effective", "{:,}", True),
    ("CPU latency (ms)", "latency_ms", "{:.3f}", True),
    ("cycles", "cycles", "{:,}", True),
    ("energy (nJ)", "energy_pj", "{:.1f}", True),
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Before/after metrics of a pruning run."""

    before: ModelMetrics
    after: ModelMetrics

    def ratio(self, attr: str) -> float | None:
        a, b = getattr(self.before, attr), getattr(self.after, attr)
        if a is None or b is None or not a:
            return None
        return b / a

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(),
                "accuracy_delta": (None if self.before.accuracy is None or self.after.accuracy is None
                                   else self.after.accuracy - self.before.accuracy),
                "ratios": {attr: self.ratio(attr) for _, attr, _, _ in _ROWS if attr != "accuracy"}}

    def table(self, title: str = "before / after pruning"):
        """A rich Table with one row per metric (energy shown in nJ)."""
        from rich.table import Table

        table = Table(title=title)
        for col in ("metric", "before", "after", "after / before"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for label, attr, fmt, _ in _ROWS:
            a, b = getattr(self.before, attr), getattr(self.after, attr)
            scale = 1e-3 if attr == "energy_pj" else 1

            def show(v: Any) -> str:
                return "—" if v is None else fmt.format(v * scale)
            if attr == "accuracy":
                change = "—" if a is None or b is None else f"{(b - a) * 100:+.2f} pt"
            else:
                r = self.ratio(attr)
                change = "—" if r is None else f"{r:.3f}×"
            table.add_row(label, show(a), show(b), change)
        if self.after.array:
            table.caption = f"cycles and energy on {self.after.array}"
        return table


# -- the pieces ----------------------------------------------------------------------------------

def _pruned_names(module: nn.Module) -> set[str]:
    from torch.nn.utils import prune

    return {h._tensor_name for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)}


def _effective_params(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, value) of every parameter, pruned ones as their masked value."""
    refresh_pruned(model)
    out = []
    for path, module in model.named_modules():
        pruned = _pruned_names(module)
        for pname, p in module.named_parameters(recurse=False):
            base = pname[:-len("_orig")] if pname.endswith("_orig") and pname[:-5] in pruned else pname
            value = getattr(module, base) if base != pname else p
            out.append((f"{path}.{base}" if path else base, value.detach()))
    return out


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameters, pruned weights counted by their masked value."""
    params = _effective_params(model)
    return sum(p.numel() for _, p in params), sum(int((p != 0).sum()) for _, p in params)


def _nm_slots(mask: np.ndarray, m: int) -> tuple[int, int]:
    """(slots, n) of storing an N×K mask in n-of-m groups, n = the densest group."""
    from .patterns import group_view
    from .schedule import k_prime

    rows, k = mask.shape
    n = int(group_view(mask, m, False).sum(axis=2).max(initial=0))
    return rows * k_prime(k, m, n), n


def storage_bytes(model: nn.Module, *, group_size: int = 4) -> dict[str, int]:
    """{"fp32", "csr", "nm_int8"} bytes of the parameters (module docstring definitions)."""
    from .prune.engine import prunable_layers
    from .prune.method import as_matrix

    weights = {}
    for name, t in prunable_layers(model).items():
        path = name if t.param == "weight" else name.rsplit(".", 1)[0]
        key = f"{path}.{t.param}" if path else t.param
        weights[key] = as_matrix(getattr(t.module, t.param).detach())
    fp32 = csr = nm = 0
    for name, p in _effective_params(model):
        fp32 += 4 * p.numel()
        w = weights.get(name)
        if w is None:
            csr += 4 * p.numel()
            nm += 4 * p.numel()
            continue
        mask = (w != 0).numpy()
        nnz = int(mask.sum())
        csr += 4 * nnz + 4 * nnz + 4 * (w.shape[0] + 1)
        slots, n = _nm_slots(mask, group_size)
        bits = 0 if n >= group_size else index_bits(group_size)
        nm += slots + math.ceil(slots * bits / 8)
    return {"fp32": fp32, "csr": csr, "nm_int8": nm}


def inference_time(model: nn.Module, inputs: tuple[torch.Tensor, ...], *, repeats: int = 30,
                   warmup: int = 3) -> float:
    """Median wall time (ms) of ``model(*inputs)`` in eval mode, one thread, no gradients."""
    was_training = model.training
    model.eval()
    refresh_pruned(model)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(*inputs)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
        model.train(was_training)
    return statistics.median(times)


def hardware_cost(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  array: str | ArrayConfig) -> ModelCost:
    """:class:`~hwprune.cost.ModelCost` of ``model`` on ``array`` with its actual masks."""
    from .cost import estimate_model
    from .importers import from_torch
    from .prune.engine import current_masks, make_permanent

    cfg = load_array(array)
    masks = current_masks(model)
    baked = make_permanent(clone_model(model))  # plain Parameters: importer names match ours
    specs = from_torch(baked, example_inputs)
    use = {}
    for spec in specs:
        m = masks.get(spec.name)
        if m is not None:
            if m.shape != (spec.N, spec.K):
                raise ConfigError(f"mask of {spec.name!r} is {m.shape}, the layer is N×K = {(spec.N, spec.K)}")
            use[spec.name] = m
    return estimate_model(specs, cfg, masks=use)


def measure(model: nn.Module, task: Task | None = None, *,
            example_inputs: tuple[torch.Tensor, ...] | None = None,
            array: str | ArrayConfig | None = "os16x16", timing_repeats: int = 30,
            timing_batch: int = 64) -> ModelMetrics:
    """Every metric of ``model``; accuracy needs ``task``, cycles and energy need ``array``.

    Parameters
    ----------
    model : nn.Module
        Dense, masked (torch prune) or physically shrunk.
    task : Task, optional
        Gives accuracy, the timing batch and (if ``example_inputs`` is not given) the inputs.
    example_inputs : tuple of Tensor, optional
        One inference's inputs for MACs and cycles (default: the task's, batch 1).
    array : str or ArrayConfig or None
        Array for cycles and energy; None skips them.
    timing_repeats : int
        Repeats of the CPU timing (0 skips it).
    """
    if task is None and example_inputs is None:
        raise ConfigError("measure needs a task or example inputs")
    inputs = example_inputs if example_inputs is not None else task.example_inputs(1)
    total, nonzero = param_counts(model)
    cfg = load_array(array) if array is not None else None
    sizes = storage_bytes(model, group_size=cfg.group_size if cfg else 4)
    cost = hardware_cost(model, inputs, cfg or "os16x16")
    macs_dense = int(cost.total("macs_dense"))
    macs_eff = int(cost.total("macs_nonzero"))
    latency = None
    if timing_repeats:
        timing_inputs = task.example_inputs(timing_batch) if task is not None else inputs
        from .prune.engine import make_permanent

        # time the deployable model: masks folded in, no per-forward mask multiply
        latency = inference_time(make_permanent(clone_model(model)), timing_inputs, repeats=timing_repeats)
    return ModelMetrics(
        accuracy=evaluate(model, task, "test") if task is not None else None,
        params_total=total, params_nonzero=nonzero, bytes_fp32=sizes["fp32"], bytes_csr=sizes["csr"],
        bytes_nm_int8=sizes["nm_int8"], macs_dense=macs_dense, macs_effective=macs_eff,
        latency_ms=latency, array=cfg.name if cfg else None,
        cycles=cost.cycles if cfg else None, energy_pj=float(cost.total("energy_pj")) if cfg else None)


def compare(before: nn.Module, after: nn.Module, task: Task | None = None, *,
            example_inputs: tuple[torch.Tensor, ...] | None = None,
            array: str | ArrayConfig | None = "os16x16", timing_repeats: int = 30) -> Comparison:
    """:func:`measure` both models the same way: a :class:`Comparison`."""
    kw: Mapping[str, Any] = {"example_inputs": example_inputs, "array": array, "timing_repeats": timing_repeats}
    return Comparison(measure(before, task, **kw), measure(after, task, **kw))
