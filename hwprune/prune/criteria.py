"""Importance criteria: how much each weight matters, as an N×K score matrix per layer.

A criterion is a function ``score(ctx: LayerContext) -> Tensor`` (N×K, non-negative, finite)
registered under a name with the calibration statistics it ``needs``.  Criteria know nothing
about patterns (except ``activation``, which scores whole output channels by their mean
activation when the pattern removes channels): the pattern turns scores into a mask.

Built-in criteria
-----------------
``l1``          |w|
``l2``          w² (per weight; over a channel or block the pattern sums it, giving the L2² norm)
``random``      uniform [0, 1), seeded per layer name
``taylor``      Σ_batches |w · ∂L/∂w| — first-order Taylor (Molchanov et al. 2017/2019)
``hessian``     OBD saliency ½ · F_kk · w² (LeCun et al. 1990), with the Hessian diagonal
                estimated by the diagonal **empirical Fisher** F = (1/n) Σᵢ (∂ℓᵢ/∂w)², the mean over
                the n calibration *samples* of each sample's squared gradient (per-sample
                gradients: ``torch.func``; not the square of the mini-batch mean gradient)
``activation``  weights: |w_ij| · ‖x_j‖₂ over the calibration inputs of column j (Wanda, Sun et
                al. 2023; conv columns are the im2col columns); channels: mean |output| of the
                channel, broadcast along K
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..patterns import SparsityPattern

__all__ = ["Criterion", "LayerContext", "LayerStats", "CRITERIA", "register_criterion",
           "get_criterion", "criterion_names", "STAT_KINDS"]

#: calibration statistics a criterion may ask for
STAT_KINDS = frozenset({"grad", "fisher", "input", "output"})


@dataclass(slots=True)
class LayerStats:
    """Calibration statistics of one layer, accumulated over ``batches`` batches.

    ``taylor``: Σ_batches |w·g| (N×K); ``grad_sq``: Σ_batches g² of the mini-batch gradient
    (N×K); ``fisher``: Σ_samples gᵢ² (N×K) over ``samples`` per-sample gradients (the empirical
    Fisher's numerator); ``input_sq``: Σ x_j² per K column; ``output_abs``: Σ mean|y| per output
    channel (N).
    """

    batches: int = 0
    samples: int = 0
    taylor: torch.Tensor | None = None
    grad_sq: torch.Tensor | None = None
    fisher: torch.Tensor | None = None
    input_sq: torch.Tensor | None = None
    output_abs: torch.Tensor | None = None


@dataclass(frozen=True, slots=True)
class LayerContext:
    """What a criterion sees of one layer: its name, N×K effective weight, target pattern, stats."""

    name: str
    weight: torch.Tensor
    pattern: SparsityPattern
    stats: LayerStats
    seed: int


@dataclass(frozen=True, slots=True)
class Criterion:
    """A named importance criterion and the calibration statistics it needs."""

    name: str
    score: Callable[[LayerContext], torch.Tensor]
    needs: frozenset[str]
    description: str = ""

    def __call__(self, ctx: LayerContext) -> torch.Tensor:
        s = self.score(ctx).to(torch.float64)
        if s.shape != ctx.weight.shape:
            raise ConfigError(f"criterion {self.name!r} returned scores of shape {tuple(s.shape)} "
                              f"for layer {ctx.name!r} of shape {tuple(ctx.weight.shape)}")
        return torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)


#: the criterion registry: name → Criterion
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, score: Callable[[LayerContext], torch.Tensor], *,
                       needs: Iterable[str] = (), description: str = "") -> Criterion:
    """Register ``score`` under ``name``; duplicate names and unknown statistics are rejected."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"criterion name must be a non-empty string, not {name!r}")
    if name in CRITERIA:
        raise ConfigError(f"criterion {name!r} is already registered")
    needs = frozenset(needs)
    if needs - STAT_KINDS:
        raise ConfigError(f"criterion {name!r} needs unknown statistics {sorted(needs - STAT_KINDS)}; "
                          f"known: {sorted(STAT_KINDS)}")
    crit = Criterion(name, score, needs, description)
    CRITERIA[name] = crit
    return crit


def get_criterion(name: str | Criterion) -> Criterion:
    """Look a criterion up by name (ConfigError lists the known ones)."""
    if isinstance(name, Criterion):
        return name
    if name not in CRITERIA:
        raise ConfigError(f"unknown criterion {name!r}; known: {', '.join(criterion_names())}")
    return CRITERIA[name]


def criterion_names() -> list[str]:
    return list(CRITERIA)


def _need(ctx: LayerContext, field: str, criterion: str) -> torch.Tensor:
    value = getattr(ctx.stats, field)
    if value is None or ctx.stats.batches == 0:
        raise ConfigError(f"criterion {criterion!r} needs calibration data for layer {ctx.name!r}")
    return value


def _l1(ctx: LayerContext) -> torch.Tensor:
    return ctx.weight.abs()


def _l2(ctx: LayerContext) -> torch.Tensor:
    return ctx.weight.square()


def _random(ctx: LayerContext) -> torch.Tensor:
    g = torch.Generator().manual_seed((ctx.seed * 1_000_003 + zlib.crc32(ctx.name.encode())) % 2**63)
    return torch.rand(ctx.weight.shape, generator=g, dtype=torch.float64)


def _taylor(ctx: LayerContext) -> torch.Tensor:
    return _need(ctx, "taylor", "taylor")


def _hessian(ctx: LayerContext) -> torch.Tensor:
    fisher = _need(ctx, "fisher", "hessian") / max(1, ctx.stats.samples)
    return 0.5 * fisher * ctx.weight.to(torch.float64).square()


def _activation(ctx: LayerContext) -> torch.Tensor:
    if ctx.pattern.kind == "channel":
        out = _need(ctx, "output_abs", "activation") / ctx.stats.batches
        return out.to(torch.float64)[:, None].expand(ctx.weight.shape).clone()
    norm = _need(ctx, "input_sq", "activation").to(torch.float64).sqrt()
    return ctx.weight.to(torch.float64).abs() * norm  # norm is (1, K) or, grouped, (N, K)


register_criterion("l1", _l1, description="weight magnitude |w|")
register_criterion("l2", _l2, description="squared weight w² (L2 norm over channels/blocks)")
register_criterion("random", _random, description="uniform random, seeded (a baseline)")
register_criterion("taylor", _taylor, needs={"grad"}, description="first-order Taylor Σ|w·∂L/∂w|")
register_criterion("hessian", _hessian, needs={"fisher"},
                   description="OBD ½·F·w², F the diagonal empirical Fisher (mean per-sample squared gradient)")
register_criterion("activation", _activation, needs={"input", "output"},
                   description="Wanda |w|·‖x_j‖; channels: mean |activation|")
