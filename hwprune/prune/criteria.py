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
``taylor``      (1/n) Σᵢ |w · ∂ℓᵢ/∂w| over the n calibration *samples* — first-order Taylor
                accumulated per sample (Molchanov et al. 2019): the mini-batch mean gradient is
                ≈ 0 near convergence, each sample's is not
``hessian``     OBD saliency ½ · F_kk · w² (LeCun et al. 1990), with the Hessian diagonal
                estimated by the diagonal **empirical Fisher** F = (1/n) Σᵢ (∂ℓᵢ/∂w)², the mean over
                the n calibration *samples* of each sample's squared gradient (per-sample
                gradients: ``torch.func``; not the square of the mini-batch mean gradient)
``activation``  weights: |w_ij| · ‖x_j‖₂ over the calibration inputs of column j (Wanda, Sun et
                al. 2023; conv columns are the im2col columns), divided by its L2 norm over the
                layer so that layers compare under a global threshold; channels: mean |output| of
                the channel, broadcast along K
``obs``         Optimal Brain Surgeon, layer-wise (Hassibi & Stork 1993; OBC, Frantar & Alistarh
                2022): with H = XᵀX + λI the Hessian of the layer's reconstruction error
                ‖X(w − ŵ)‖² over the calibration inputs X (im2col rows for convs), the saliency
                w²/[H⁻¹]_kk, divided by its L2 norm over the layer so that layers compare under a
                global threshold; then the *compensation*: the kept weights of every row move to
                the least-squares optimum ŵ_S = w_S + H_SS⁻¹ H_SP w_P given the pruned set P
                (:attr:`Criterion.update`; the engine applies it layer by layer in execution
                order, each layer's X read from the already-compensated model, as SparseGPT does)

A criterion with an ``update`` changes the kept weights (``weight_orig``) after the mask is
chosen; the mask itself is still a ``torch.nn.utils.prune`` mask.

A score is a snapshot of the model it was measured on.  Under global scope the engine re-scores
the gradient criteria (``taylor``, ``hessian``) on the partly pruned model several times on the
way to the final density (:func:`hwprune.prune.engine.rescore_steps`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..patterns import SparsityPattern

__all__ = ["Criterion", "LayerContext", "LayerStats", "CRITERIA", "register_criterion",
           "get_criterion", "criterion_names", "STAT_KINDS", "OBS_DAMPING", "obs_reconstruct"]

#: calibration statistics a criterion may ask for
STAT_KINDS = frozenset({"grad", "fisher", "input", "output", "gram"})

#: λ of the OBS Hessian XᵀX + λI, as a fraction of the mean of its diagonal (SparseGPT's 1 %)
OBS_DAMPING = 0.01


@dataclass(slots=True)
class LayerStats:
    """Calibration statistics of one layer, accumulated over ``batches`` batches.

    ``taylor``: Σ_batches |w·g| (N×K); ``grad_sq``: Σ_batches g² of the mini-batch gradient
    (N×K); ``fisher``: Σ_samples gᵢ² (N×K) over ``samples`` per-sample gradients (the empirical
    Fisher's numerator); ``grad_abs``: Σ_samples |gᵢ| (N×K) of the same gradients; ``input_sq``: Σ x_j² per K column; ``output_abs``: Σ mean|y| per output
    channel (N); ``gram``: Σ XᵀX of the layer's input rows X (im2col rows for convs), shaped
    (groups, K, K) — row i of the weight reads group ``i // (N / groups)``.
    """

    batches: int = 0
    samples: int = 0
    taylor: torch.Tensor | None = None
    grad_sq: torch.Tensor | None = None
    fisher: torch.Tensor | None = None
    grad_abs: torch.Tensor | None = None
    input_sq: torch.Tensor | None = None
    output_abs: torch.Tensor | None = None
    gram: torch.Tensor | None = None


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
    """A named importance criterion and the calibration statistics it needs.

    ``update``, if set, is the criterion's weight compensation: ``update(ctx, keep)`` returns
    the N×K weight the kept entries (``keep``, N×K bool) should take once the others are pruned.
    """

    name: str
    score: Callable[[LayerContext], torch.Tensor]
    needs: frozenset[str]
    description: str = ""
    update: Callable[[LayerContext, torch.Tensor], torch.Tensor] | None = None

    def __call__(self, ctx: LayerContext) -> torch.Tensor:
        s = self.score(ctx).to(torch.float64)
        if s.shape != ctx.weight.shape:
            raise ConfigError(f"criterion {self.name!r} returned scores of shape {tuple(s.shape)} "
                              f"for layer {ctx.name!r} of shape {tuple(ctx.weight.shape)}")
        return torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)


#: the criterion registry: name → Criterion
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, score: Callable[[LayerContext], torch.Tensor], *,
                       needs: Iterable[str] = (), description: str = "",
                       update: Callable[[LayerContext, torch.Tensor], torch.Tensor] | None = None) -> Criterion:
    """Register ``score`` under ``name``; duplicate names and unknown statistics are rejected.

    ``update(ctx, keep) -> N×K weight``: optional compensation of the kept weights (see ``obs``).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"criterion name must be a non-empty string, not {name!r}")
    if name in CRITERIA:
        raise ConfigError(f"criterion {name!r} is already registered")
    needs = frozenset(needs)
    if needs - STAT_KINDS:
        raise ConfigError(f"criterion {name!r} needs unknown statistics {sorted(needs - STAT_KINDS)}; "
                          f"known: {sorted(STAT_KINDS)}")
    crit = Criterion(name, score, needs, description, update)
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


def _layer_normalised(s: torch.Tensor) -> torch.Tensor:
    """``s / ‖s‖₂`` over the layer (a zero layer stays zero): the order within the layer is
    unchanged, only the split of a global budget between layers."""
    norm = s.norm()
    return s / norm if norm > 0 else s


def _taylor(ctx: LayerContext) -> torch.Tensor:
    grad_abs = _need(ctx, "grad_abs", "taylor") / max(1, ctx.stats.samples)
    return ctx.weight.to(torch.float64).abs() * grad_abs


def _hessian(ctx: LayerContext) -> torch.Tensor:
    fisher = _need(ctx, "fisher", "hessian") / max(1, ctx.stats.samples)
    return 0.5 * fisher * ctx.weight.to(torch.float64).square()


def _activation(ctx: LayerContext) -> torch.Tensor:
    if ctx.pattern.kind == "channel":
        out = _need(ctx, "output_abs", "activation") / ctx.stats.batches
        return out.to(torch.float64)[:, None].expand(ctx.weight.shape).clone()
    norm = _need(ctx, "input_sq", "activation").to(torch.float64).sqrt()
    # |w|·‖x‖ is in the layer's own output units (Wanda compares it within a row): normalised per
    # layer, as obs is, so a global threshold does not starve the layers with small inputs.  Raw,
    # 90 % global cut the Transformer's classifier and the GCN's lin2 to the 2 % floor (67.5 %
    # and 60.5 % after fine-tuning, fp32 90.6 %); normalised, 90.6 % and 90.9 %.  Within a layer
    # (layer scope, N:M, per row) the order, and so the mask, is unchanged.
    return _layer_normalised(ctx.weight.to(torch.float64).abs() * norm)  # norm is (1, K) or, grouped, (N, K)


def _damped(gram: torch.Tensor) -> torch.Tensor:
    """H = XᵀX + λI per group, λ = :data:`OBS_DAMPING` × mean diagonal (never singular: dead
    input columns get λ alone)."""
    h = gram.to(torch.float64)
    diag = h.diagonal(dim1=-2, dim2=-1)
    lam = OBS_DAMPING * diag.mean(dim=-1).clamp_min(1e-12)
    return h + lam[:, None, None] * torch.eye(h.shape[-1], dtype=h.dtype)


def _row_groups(ctx: LayerContext, gram: torch.Tensor) -> torch.Tensor:
    """The group index of each output row (grouped convolutions read a group's inputs only)."""
    n, g = ctx.weight.shape[0], gram.shape[0]
    return torch.arange(n) // max(1, n // g)


def _obs(ctx: LayerContext) -> torch.Tensor:
    h = _damped(_need(ctx, "gram", "obs"))
    hinv_diag = torch.linalg.inv(h).diagonal(dim1=-2, dim2=-1)  # (groups, K)
    return _layer_normalised(ctx.weight.to(torch.float64).square() / hinv_diag[_row_groups(ctx, h)])


def obs_reconstruct(ctx: LayerContext, keep: torch.Tensor) -> torch.Tensor:
    """The kept weights of every row re-fitted to the layer's calibration outputs.

    With H = XᵀX + λI, a row w pruned on the set P and kept on S moves to the minimiser of
    (w − ŵ)ᵀH(w − ŵ) subject to ŵ_P = 0: ŵ_S = w_S + H_SS⁻¹ H_SP w_P (the OBS update of
    Hassibi & Stork for a set of weights; one exact solve per row, as OBC does).  Entries of
    ``keep`` that are False come back as 0.

    Cost: one |S|×|S| solve per row, O(N·|S|³) — seconds for the zoo's layers, slow for
    layers keeping thousands of weights per row.  SparseGPT's column-sequential update is
    cheaper (O(K³ + N·K²)) but, with the mask fixed beforehand, lost 9 pt against this exact
    fit on the digits CNN at 90 % (it needs its own adaptive mask choice).
    """
    h = _damped(_need(ctx, "gram", "obs"))
    w = ctx.weight.to(torch.float64)
    keep = keep.to(torch.bool)
    out = torch.where(keep, w, torch.zeros_like(w))
    groups = _row_groups(ctx, h)
    for i in range(w.shape[0]):
        s, p = keep[i], ~keep[i]
        if not bool(s.any()) or not bool((p & (w[i] != 0)).any()):
            continue
        hi = h[groups[i]]
        out[i, s] = w[i, s] + torch.linalg.solve(hi[s][:, s], hi[s][:, p] @ w[i, p])
    return out


register_criterion("l1", _l1, description="weight magnitude |w|")
register_criterion("l2", _l2, description="squared weight w² (L2 norm over channels/blocks)")
register_criterion("random", _random, description="uniform random, seeded (a baseline)")
register_criterion("taylor", _taylor, needs={"fisher"},
                   description="first-order Taylor, per sample: mean over samples of |w·∂ℓᵢ/∂w|")
register_criterion("hessian", _hessian, needs={"fisher"},
                   description="OBD ½·F·w², F the diagonal empirical Fisher (mean per-sample squared gradient)")
register_criterion("activation", _activation, needs={"input", "output"},
                   description="Wanda |w|·‖x_j‖ (layer-normalised); channels: mean |activation|")
register_criterion("obs", _obs, needs={"gram"}, update=obs_reconstruct,
                   description="Optimal Brain Surgeon w²/[H⁻¹]_kk, H = XᵀX (layer-normalised), "
                               "then the kept weights re-fitted by least squares")
