"""The one ``torch.nn.utils.prune`` method: a mask is ``pattern.mask(scores)``.

Any criterion's scores × any :class:`~hwprune.patterns.SparsityPattern`: there is no class per
combination.  Because this is a :class:`torch.nn.utils.prune.BasePruningMethod`, the usual
reparametrisation follows (``weight_orig``, ``weight_mask``, a forward pre-hook) and
``torch.nn.utils.prune.remove`` makes the pruning permanent, as users of PyTorch expect.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..patterns import SparsityPattern, parse_pattern

__all__ = ["PatternPruning", "pattern_prune", "as_matrix"]


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """The N×K view of a weight-shaped tensor: ``t.reshape(N, -1)`` (the hardware's K order)."""
    return t.reshape(t.shape[0], -1) if t.dim() != 2 else t


class PatternPruning(prune.BasePruningMethod):
    """Prune a weight to ``pattern``, ranking entries by importance scores.

    ``compute_mask(t, default_mask)`` views the scores ``t`` as N×K and returns
    ``pattern.mask(|t|)``.  Entries already pruned by ``default_mask`` are ranked below every
    live one, so repeated application with a falling density gives nested masks (iterative and
    gradual schedules).  ``PRUNING_TYPE = "global"``: the mask is recomputed over the whole
    tensor, which is what keeps N:M groups and blocks aligned to the hardware.
    """

    PRUNING_TYPE = "global"

    def __init__(self, pattern: SparsityPattern | str) -> None:
        self.pattern = parse_pattern(pattern)

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        scores = as_matrix(t.detach()).to(torch.float64).abs().clone()
        alive = as_matrix(default_mask.detach()) != 0
        scores[~alive] = -1.0
        keep = self.pattern.mask(scores.cpu().numpy())
        return torch.from_numpy(keep).to(dtype=default_mask.dtype).reshape(default_mask.shape)

    @classmethod
    def apply(cls, module: nn.Module, name: str, pattern: SparsityPattern | str,  # type: ignore[override]
              importance_scores: torch.Tensor | None = None) -> PatternPruning:
        return super().apply(module, name, pattern=pattern, importance_scores=importance_scores)


def pattern_prune(module: nn.Module, name: str, pattern: SparsityPattern | str,
                  importance_scores: torch.Tensor | None = None) -> nn.Module:
    """Functional form, like ``torch.nn.utils.prune.l1_unstructured``.

    Parameters
    ----------
    module : nn.Module
        Module holding the tensor.
    name : str
        Parameter name, usually ``"weight"``.
    pattern : SparsityPattern or str
        Target structure, e.g. ``"2:4"`` or ``Unstructured(0.25)``.
    importance_scores : Tensor, optional
        Same shape as the parameter (any shape that reshapes to N×K); defaults to the
        parameter itself (magnitude pruning).

    Returns
    -------
    nn.Module
        ``module``, now with ``{name}_orig`` and ``{name}_mask``.
    """
    if importance_scores is not None:
        importance_scores = importance_scores.reshape(getattr(module, name).shape)
    PatternPruning.apply(module, name, pattern, importance_scores=importance_scores)
    return module
