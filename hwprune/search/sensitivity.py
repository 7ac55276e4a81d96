"""The accuracy side of the search: how much each (layer, candidate) hurts, and a disk cache.

*Measured* sensitivity (the default) prunes **only** that layer to that candidate's mask —
one shot, no fine-tuning, exactly the mask ``hwprune prune --plan`` would apply — and records
the change of the validation loss (the workload's loss: mean cross-entropy, nats, for the
built-in tasks) and of its metric (top-1 accuracy unless the workload says otherwise) against
the unpruned model.  Any :class:`~hwprune.workload.WorkloadLike` works: a built-in task or a
user's DataLoaders.  Any candidate that empties a row also zeroes that channel's bias and
the batch-norm that reads them, as pruning does, so a removed channel outputs exactly zero.

The *fisher* proxy needs no forward pass beyond the calibration batches: by optimal brain
damage (LeCun et al. 1990), removing weights w_i of a trained model raises the loss by about
½ Σ h_ii w_i², with the Hessian diagonal h_ii estimated by the diagonal empirical Fisher (the
mean over the calibration samples of each sample's squared gradient, as the ``hessian``
criterion does).  It
predicts no accuracy change (None) and ignores biases and batch-norms.

Measured results are cached on disk, one small JSON file per (layer, candidate), named by a
hash of everything that determines the number: the model's weights (:func:`model_hash`), the
data (:func:`task_fingerprint`), the criterion, its calibration (seed, batches), the
layer and the candidate.  An interrupted search therefore resumes where it stopped, and a
second search of the same model (another budget, another array) measures nothing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..io import write_text
from ..train import refresh_pruned
from ..workload import WorkloadLike

__all__ = [
    "SENSITIVITY_METHODS",
    "Sensitivity",
    "SensitivityCache",
    "cache_root",
    "fisher_layer",
    "measure_layer",
    "model_hash",
    "task_fingerprint",
    "val_metrics",
]

#: how sensitivity is obtained: one-shot measurement, or the second-order proxy
SENSITIVITY_METHODS = ("measured", "fisher")
#: bump when the measurement changes meaning, so old cache entries are not reused
_CACHE_VERSION = 3  # 2: dead rows of any pattern lose bias and batch-norm; 3: taylor per sample


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """Change of the validation loss (nats) and accuracy (fraction, None for the proxy)."""

    loss: float
    accuracy: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"loss": self.loss, "accuracy": self.accuracy}


def _hash_tensors(h: hashlib._Hash, items: Iterator[tuple[str, torch.Tensor]]) -> None:
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())


def model_hash(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (masks included), by name: the model's identity."""
    h = hashlib.sha256()
    _hash_tensors(h, iter(sorted(model.state_dict().items())))
    return "sha256:" + h.hexdigest()


def task_fingerprint(data: WorkloadLike, *, calib_batches: int = 8, seed: int = 0) -> str:
    """The workload's name and a hash of the data sensitivity reads: the calibration batches
    (``calib_batches``, ``seed``) and every validation batch."""
    h = hashlib.sha256(data.name.encode())
    for split, batches in (("calib", data.calibration_batches(calib_batches, seed=seed)),
                           ("val", data.eval_batches("val"))):
        for b, batch in enumerate(batches):
            _hash_tensors(h, ((f"{split}{b}.in{i}", t) for i, t in enumerate(batch.inputs)
                              if isinstance(t, torch.Tensor)))
            _hash_tensors(h, ((f"{split}{b}.{k}", v) for k, v in sorted((batch.kwargs or {}).items())
                              if isinstance(v, torch.Tensor)))
            _hash_tensors(h, iter([(f"{split}{b}.targets", batch.targets)]))
            if batch.index is not None:
                _hash_tensors(h, iter([(f"{split}{b}.index", batch.index)]))
    return f"{data.name}:{h.hexdigest()[:32]}"


def cache_root() -> Path:
    """``$HWPRUNE_CACHE`` or ``~/.cache/hwprune`` (shared with the Verilator build cache)."""
    return Path(os.environ.get("HWPRUNE_CACHE") or Path.home() / ".cache" / "hwprune")


@dataclass(frozen=True, slots=True)
class SensitivityCache:
    """One JSON file per measured (layer, candidate) under ``directory``; writes are atomic."""

    directory: Path

    @classmethod
    def default(cls) -> SensitivityCache:
        return cls(cache_root() / "sensitivity")

    @staticmethod
    def key(**fields: object) -> str:
        text = json.dumps({"version": _CACHE_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> Sensitivity | None:
        try:
            data = json.loads((self.directory / f"{key}.json").read_text())
            return Sensitivity(float(data["loss"]), None if data["accuracy"] is None else float(data["accuracy"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: measure again

    def put(self, key: str, value: Sensitivity, **fields: object) -> None:
        write_text(self.directory / f"{key}.json",
                   json.dumps({**fields, **value.to_dict()}, sort_keys=True) + "\n", force=True)


class _WithLoss:
    """A workload whose metric also records the loss of the same outputs (one evaluation pass)."""

    def __init__(self, data: WorkloadLike) -> None:
        self._data = data
        self.loss = float("nan")

    def __getattr__(self, name: str):  # everything else is the wrapped workload's
        return getattr(self._data, name)

    def compute_metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        self.loss = float(self._data.compute_loss(outputs, targets))
        return self._data.compute_metric(outputs, targets)


def val_metrics(model: nn.Module, data: WorkloadLike) -> tuple[float, float]:
    """(loss, metric) of ``model`` on the validation split from one evaluation pass
    (:func:`hwprune.workload.evaluate`): the workload's loss and metric over the whole split's
    outputs (for tasks: mean cross-entropy and top-1 accuracy)."""
    from ..workload import evaluate

    probe = _WithLoss(data)
    metric = evaluate(model, probe, "val")
    if math.isnan(probe.loss):
        raise ConfigError(f"{data.name}: the validation data is empty; sensitivity needs it")
    return probe.loss, metric


@contextlib.contextmanager
def _replaced(tensor: torch.Tensor, values: torch.Tensor) -> Iterator[None]:
    """Temporarily give ``tensor`` the ``values`` (same numel); restored bit for bit on exit."""
    saved = tensor.detach().clone()
    with torch.no_grad():
        tensor.copy_(values.reshape(tensor.shape).to(tensor.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            tensor.copy_(saved)


def _zeroed(module: nn.Module, pname: str, keep: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """Temporarily keep only ``keep`` (bool, the tensor's shape) of ``module.pname``.

    A tensor already pruned with ``torch.nn.utils.prune`` gets its mask narrowed (so pruning
    only removes); a plain parameter is zeroed in place.  Restored bit for bit on exit.
    """
    mask = getattr(module, pname + "_mask", None)
    tensor = mask if mask is not None else getattr(module, pname)
    return _replaced(tensor, tensor.detach() * keep.to(tensor.dtype))


@contextlib.contextmanager
def pruned_layer(target, mask: np.ndarray, followers: Mapping[str, list] | None,
                 weight: torch.Tensor | None = None) -> Iterator[None]:
    """Prune one layer (a :class:`~hwprune.prune.engine.Target`) to ``mask`` for the duration.

    Rows the mask leaves all-zero also lose their bias and following batch-norm, whatever the
    pattern, as :func:`hwprune.prune.engine.mask_dead_rows` does when the layer is pruned.
    ``weight`` (N×K), if given, replaces the layer's trained weight meanwhile: a criterion's
    compensation (``obs``), as :func:`hwprune.prune.engine.compensate` applies it when pruning.
    """
    w = getattr(target.module, target.param)
    keep = torch.from_numpy(np.ascontiguousarray(mask)).reshape(w.shape)
    with contextlib.ExitStack() as stack:
        if weight is not None:
            stack.enter_context(_replaced(target.orig, weight))
        stack.enter_context(_zeroed(target.module, target.param, keep))
        rows = torch.from_numpy(mask.any(axis=1))
        if not bool(rows.all()):
            extra = [(target.module, "bias")] if target.param == "weight" else []
            for module, pname in extra + list((followers or {}).get(target.name, [])):
                if getattr(module, pname, None) is not None:
                    stack.enter_context(_zeroed(module, pname, rows.reshape(getattr(module, pname).shape)))
        refresh_pruned(target.module)
        try:
            yield
        finally:
            stack.close()
            refresh_pruned(target.module)


def measure_layer(model: nn.Module, data: WorkloadLike, target, mask: np.ndarray, baseline: tuple[float, float],
                  *, followers: Mapping[str, list] | None = None, weight: torch.Tensor | None = None) -> Sensitivity:
    """Loss and accuracy change when only ``target`` is pruned to ``mask`` (one shot; with the
    kept entries set to ``weight`` if the criterion compensates)."""
    with pruned_layer(target, mask, followers, weight):
        loss, acc = val_metrics(model, data)
    return Sensitivity(loss - baseline[0], acc - baseline[1])


def fisher_layer(weight: torch.Tensor, fisher_sum: torch.Tensor, samples: int, mask: np.ndarray,
                 alive: np.ndarray | None = None) -> Sensitivity:
    """OBD proxy ½ Σ_removed F_ii w_i² (module docstring), F = ``fisher_sum / samples`` (the
    calibration statistics' Σ of per-sample squared gradients); ``alive``: the entries still
    present (those already pruned cost nothing to remove again)."""
    fisher = fisher_sum.double() / max(samples, 1)
    saliency = (0.5 * fisher * weight.double().square()).numpy()
    removed = ~mask if alive is None else (~mask & alive)
    return Sensitivity(float(saliency[removed].sum()), None)
