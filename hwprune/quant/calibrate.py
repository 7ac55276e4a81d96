"""Activation-range calibration: one symmetric per-tensor scale from calibration activations.

A calibrator maps the absolute values a tensor took on the calibration set to the magnitude
``amax`` that int8 code 127 stands for (scale = amax / 127).  ``minmax`` keeps every value in
range; ``percentile`` clips the rare outliers so that the bulk of the distribution gets finer
steps.  Calibrators are a registry (:data:`CALIBRATORS`): add one with :func:`register_calibrator`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["CALIBRATORS", "Calibration", "amax_of", "calibration_inputs", "register_calibrator"]

#: the most absolute values kept per tensor (a deterministic stride subsample beyond that)
MAX_SAMPLES = 1 << 22


def _minmax(absvals: np.ndarray, percentile: float) -> float:
    del percentile
    return float(absvals.max(initial=0.0))


def _percentile(absvals: np.ndarray, percentile: float) -> float:
    return float(np.percentile(absvals, percentile)) if absvals.size else 0.0


#: calibrator name → amax(absolute values, percentile)
CALIBRATORS: dict[str, Callable[[np.ndarray, float], float]] = {}


def register_calibrator(name: str, fn: Callable[[np.ndarray, float], float]) -> None:
    """Add a calibrator; a duplicate name is rejected."""
    if name in CALIBRATORS:
        raise ConfigError(f"calibrator {name!r} is already registered")
    CALIBRATORS[name] = fn


register_calibrator("minmax", _minmax)
register_calibrator("percentile", _percentile)


@dataclass(frozen=True, slots=True)
class Calibration:
    """How activation ranges are chosen: ``method`` (a :data:`CALIBRATORS` name) and, for
    ``percentile``, the percentile of |x| that maps to 127."""

    method: str = "percentile"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if self.method not in CALIBRATORS:
            raise ConfigError(f"unknown calibration method {self.method!r} "
                              f"(known: {', '.join(sorted(CALIBRATORS))})")
        if isinstance(self.percentile, bool) or not 50.0 <= float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in [50, 100], not {self.percentile!r}")

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "percentile": self.percentile}


def amax_of(tensors: Iterable[torch.Tensor], calib: Calibration) -> float:
    """The calibrated magnitude of one tensor observed over several batches."""
    parts = [t.detach().abs().reshape(-1).double().numpy() for t in tensors]
    absvals = np.concatenate(parts) if parts else np.zeros(0)
    if absvals.size > MAX_SAMPLES:
        absvals = absvals[:: -(-absvals.size // MAX_SAMPLES)]
    if not np.all(np.isfinite(absvals)):
        raise ConfigError("calibration activations contain NaN or infinity")
    return CALIBRATORS[calib.method](absvals, float(calib.percentile))


def calibration_inputs(data: object, n: int, *, seed: int = 0) -> torch.Tensor:
    """The first ``n`` model inputs of ``data`` as one float tensor.

    ``data`` is a workload (a built-in :class:`~hwprune.tasks.Task` or an
    :class:`hwprune.Workload` over the user's DataLoaders): its
    :meth:`~hwprune.workload.WorkloadLike.calibration_batches` are read until ``n`` examples are
    in hand.  A tensor (examples on dim 0) is taken as it is.
    """
    from ..workload import as_workload

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the calibration set needs a positive number of examples, not {n!r}")
    if isinstance(data, torch.Tensor):
        batches: Iterable[torch.Tensor] = [data]
    else:
        workload = as_workload(data, what="calibration data")
        batches = (_single_input(b, workload) for b in workload.calibration_batches(n, seed=seed))
    got, count = [], 0
    for x in batches:
        got.append(x.float())
        count += x.shape[0]
        if count >= n:
            break
    if not got or count == 0:
        raise ConfigError("the calibration data is empty")
    return torch.cat(got)[:n]


def _single_input(batch: object, workload: object) -> torch.Tensor:
    if batch.index is not None or batch.kwargs or len(batch.inputs) != 1:
        raise ConfigError(f"{getattr(workload, 'name', 'the workload')}: the integer pipeline runs "
                          "models of one batch-first input (no graph, keyword or multi-input batches)")
    return batch.inputs[0]
