"""The accuracy side of the search: how much each (layer, candidate) hurts, and a disk cache.

*Measured* sensitivity (the default) prunes **only** that layer to that candidate's mask —
one shot, no fine-tuning, exactly the mask ``hwprune prune --plan`` would apply — and records
the change of the validation loss (mean cross-entropy, nats) and of the validation accuracy
against the unpruned model.  A channel candidate also zeroes the removed channels' bias and
the batch-norm that reads them, as pruning does, so a removed channel outputs exactly zero.

The *fisher* proxy needs no forward pass beyond the calibration batches: by optimal brain
damage (LeCun et al. 1990), removing weights w_i of a trained model raises the loss by about
½ Σ h_ii w_i², with the Hessian diagonal h_ii estimated by the empirical Fisher (the mean over
calibration mini-batches of the squared gradient, as the ``hessian`` criterion does).  It
predicts no accuracy change (None) and ignores biases and batch-norms.

Measured results are cached on disk, one small JSON file per (layer, candidate), named by a
hash of everything that determines the number: the model's weights (:func:`model_hash`), the
task's data (:func:`task_fingerprint`), the criterion, its calibration (seed, batches), the
layer and the candidate.  An interrupted search therefore resumes where it stopped, and a
second search of the same model (another budget, another array) measures nothing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io import write_text
from ..tasks import Task
from ..train import forward_batch, refresh_pruned

__all__ = ["Sensitivity", "SENSITIVITY_METHODS", "model_hash", "task_fingerprint", "cache_root",
           "SensitivityCache", "val_metrics", "measure_layer", "fisher_layer"]

#: how sensitivity is obtained: one-shot measurement, or the second-order proxy
SENSITIVITY_METHODS = ("measured", "fisher")
#: bump when the measurement changes meaning, so old cache entries are not reused
_CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """Change of the validation loss (nats) and accuracy (fraction, None for the proxy)."""

    loss: float
    accuracy: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"loss": self.loss, "accuracy": self.accuracy}


def _hash_tensors(h: "hashlib._Hash", items: Iterator[tuple[str, torch.Tensor]]) -> None:
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())


def model_hash(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (masks included), by name: the model's identity."""
    h = hashlib.sha256()
    _hash_tensors(h, iter(sorted(model.state_dict().items())))
    return "sha256:" + h.hexdigest()


def task_fingerprint(task: Task) -> str:
    """The task's name and a hash of its train and validation data (what sensitivity reads)."""
    h = hashlib.sha256(task.name.encode())
    for split in ("train", "val"):
        s = task.split(split)
        _hash_tensors(h, ((f"{split}.in{i}", t) for i, t in enumerate(s.inputs)))
        _hash_tensors(h, iter([(f"{split}.targets", s.targets)]))
        if s.index is not None:
            _hash_tensors(h, iter([(f"{split}.index", s.index)]))
    return f"{task.name}:{h.hexdigest()[:32]}"


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


def val_metrics(model: nn.Module, task: Task, *, batch_size: int = 512) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on the validation split, eval mode, no grad."""
    was_training = model.training
    model.eval()
    refresh_pruned(model)
    loss = correct = total = 0.0
    try:
        with torch.no_grad():
            for batch in task.batches("val", batch_size=batch_size):
                logits = forward_batch(model, batch)
                loss += float(F.cross_entropy(logits, batch.targets, reduction="sum"))
                correct += float((logits.argmax(dim=-1) == batch.targets).sum())
                total += int(batch.targets.shape[0])
    finally:
        model.train(was_training)
    return loss / max(total, 1), correct / max(total, 1)


@contextlib.contextmanager
def _zeroed(module: nn.Module, pname: str, keep: torch.Tensor) -> Iterator[None]:
    """Temporarily keep only ``keep`` (bool, the tensor's shape) of ``module.pname``.

    A tensor already pruned with ``torch.nn.utils.prune`` gets its mask narrowed (so pruning
    only removes); a plain parameter is zeroed in place.  Restored bit for bit on exit.
    """
    mask = getattr(module, pname + "_mask", None)
    if mask is not None:
        saved = mask.clone()
        with torch.no_grad():
            mask.mul_(keep.to(mask.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                mask.copy_(saved)
        return
    param = getattr(module, pname)
    saved = param.detach().clone()
    with torch.no_grad():
        param.mul_(keep.to(param.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(saved)


@contextlib.contextmanager
def pruned_layer(target, mask: np.ndarray, followers: Mapping[str, list] | None,
                 channel: bool) -> Iterator[None]:
    """Prune one layer (a :class:`~hwprune.prune.engine.Target`) to ``mask`` for the duration.

    ``channel``: also zero the removed channels' bias and following batch-norm, as
    :func:`hwprune.prune.engine.apply_patterns` does.
    """
    w = getattr(target.module, target.param)
    keep = torch.from_numpy(np.ascontiguousarray(mask)).reshape(w.shape)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_zeroed(target.module, target.param, keep))
        if channel:
            rows = torch.from_numpy(mask.any(axis=1))
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


def measure_layer(model: nn.Module, task: Task, target, mask: np.ndarray, baseline: tuple[float, float],
                  *, followers: Mapping[str, list] | None = None, channel: bool = False) -> Sensitivity:
    """Loss and accuracy change when only ``target`` is pruned to ``mask`` (one shot)."""
    with pruned_layer(target, mask, followers, channel):
        loss, acc = val_metrics(model, task)
    return Sensitivity(loss - baseline[0], acc - baseline[1])


def fisher_layer(weight: torch.Tensor, grad_sq: torch.Tensor, batches: int, mask: np.ndarray,
                 alive: np.ndarray | None = None) -> Sensitivity:
    """OBD proxy ½ Σ_removed F_ii w_i² (module docstring); ``alive``: entries already pruned
    before (they cost nothing to remove again)."""
    fisher = grad_sq.double() / max(batches, 1)
    saliency = (0.5 * fisher * weight.double().square()).numpy()
    removed = ~mask if alive is None else (~mask & alive)
    return Sensitivity(float(saliency[removed].sum()), None)
