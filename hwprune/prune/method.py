"""The one ``torch.nn.utils.prune`` method: a mask is ``pattern.mask(scores)``.

Any criterion's scores × any :class:`~hwprune.patterns.SparsityPattern`: there is no class per
combination.  Because this is a :class:`torch.nn.utils.prune.BasePruningMethod`, the usual
reparametrisation follows (``weight_orig``, ``weight_mask``, a forward pre-hook) and
``torch.nn.utils.prune.remove`` makes the pruning permanent, as users of PyTorch expect.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import ConfigError
from ..patterns import Block, Channel, SparsityPattern, Unstructured, parse_pattern

__all__ = ["PatternPruning", "pattern_prune", "as_matrix", "layer_mask"]


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """The N×K view of a weight-shaped tensor: ``t.reshape(N, -1)`` (the hardware's K order)."""
    return t.reshape(t.shape[0], -1) if t.dim() != 2 else t


def layer_mask(pattern: SparsityPattern, scores: np.ndarray, alive: np.ndarray | None = None, *,
               row_floor: int = 1) -> np.ndarray:
    """The N×K mask ``pattern`` keeps of ``scores`` (≥ 0) on a layer whose live entries are ``alive``.

    * **Composition**: entries already pruned (``~alive``) never come back — the result is
      ``alive AND new`` — and they rank below every live entry (for N:M and unstructured; a
      channel or block pattern sums only the live scores), so a second pattern picks among the
      survivors of the first.
    * **Per-row floor**: an unstructured mask keeps at least ``min(row_floor, live entries)``
      weights in every output row, so no row (output channel, class) dies by accident; those
      entries come first and the rest of the budget goes to the best remaining scores, so the
      kept count is ``max(pattern.keep_count(size), Σ floors)``.  N:M masks never empty a live
      row; channel and block patterns, whose own constraint is to remove whole rows or blocks,
      take no floor.
    """
    s = np.asarray(scores, dtype=np.float64).copy()
    alive = np.ones(s.shape, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
    summed = isinstance(pattern, (Channel, Block))
    s[~alive] = 0.0 if summed else -1.0
    keep = pattern.mask(s)
    if isinstance(pattern, Unstructured) and row_floor > 0:
        floors = np.minimum(row_floor, alive.sum(axis=1))
        if ((keep & alive).sum(axis=1) < floors).any():
            keep = _with_row_floor(s, floors, pattern.keep_count(s.size))
    return keep & alive


def _with_row_floor(s: np.ndarray, floors: np.ndarray, count: int) -> np.ndarray:
    """The best ``floors[i]`` entries of every row i, then the best others up to ``count``."""
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :].repeat(s.shape[0], 0), axis=1)
    reserved = rank < floors[:, None]
    budget = count - int(reserved.sum())
    if budget > 0:
        rest = np.where(reserved, -np.inf, s)
        flat = np.argsort(-rest.ravel(), kind="stable")[:budget]
        reserved.ravel()[flat] = True
    return reserved


class PatternPruning(prune.BasePruningMethod):
    """Prune a weight to ``pattern``, ranking entries by importance scores.

    ``compute_mask(t, default_mask)`` views the scores ``t`` as N×K and returns
    :func:`layer_mask` of ``|t|`` on the live entries of ``default_mask``: a second pruning only
    ever removes (new mask = old mask AND the new pattern's choice among the survivors), and an
    unstructured pattern keeps ``row_floor`` weights per live output row.
    ``PRUNING_TYPE = "global"``: the mask is recomputed over the whole tensor, which is what
    keeps N:M groups and blocks aligned to the hardware; since ``PruningContainer`` then
    replaces the whole mask, the AND is done here.
    """

    PRUNING_TYPE = "global"

    def __init__(self, pattern: SparsityPattern | str, row_floor: int = 1) -> None:
        if isinstance(row_floor, bool) or not isinstance(row_floor, int) or row_floor < 0:
            raise ConfigError(f"row floor must be a non-negative integer, not {row_floor!r}")
        self.pattern = parse_pattern(pattern)
        self.row_floor = row_floor

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        scores = as_matrix(t.detach()).to(torch.float64).abs().cpu().numpy()
        alive = (as_matrix(default_mask.detach()) != 0).cpu().numpy()
        keep = layer_mask(self.pattern, scores, alive, row_floor=self.row_floor)
        return torch.from_numpy(keep).to(dtype=default_mask.dtype).reshape(default_mask.shape)

    @classmethod
    def apply(cls, module: nn.Module, name: str, pattern: SparsityPattern | str,  # type: ignore[override]
              importance_scores: torch.Tensor | None = None, row_floor: int = 1) -> PatternPruning:
        return super().apply(module, name, pattern=pattern, row_floor=row_floor,
                             importance_scores=importance_scores)


def pattern_prune(module: nn.Module, name: str, pattern: SparsityPattern | str,
                  importance_scores: torch.Tensor | None = None, *, row_floor: int = 1) -> nn.Module:
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
    row_floor : int
        Unstructured patterns keep at least this many weights per live output row (0: none).

    Returns
    -------
    nn.Module
        ``module``, now with ``{name}_orig`` and ``{name}_mask``.
    """
    if importance_scores is not None:
        importance_scores = importance_scores.reshape(getattr(module, name).shape)
    PatternPruning.apply(module, name, pattern, importance_scores=importance_scores, row_floor=row_floor)
    return module
