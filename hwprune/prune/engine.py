"""The pruning engine: criterion × pattern × scope × schedule, with fine-tuning.

Three lines of Python do what ``hwprune prune`` does::

    task = load_task("digits_cnn"); model, _ = train_task(task)
    result = prune_model(model, "2:4", data=task, criterion="taylor", schedule="agp", steps=4)
    result.masks  # {layer name: N×K bool}, the same names as hwprune.importers.from_torch

``data`` is any :class:`~hwprune.workload.WorkloadLike`: a built-in task, or a user's
``hwprune.Workload(train_loader, val_loader, loss_fn)``.

Layers are the weights of ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d`` (named by module path,
e.g. ``conv1``) and the packed input projection of ``nn.MultiheadAttention`` (named
``<path>.in_proj``).  Every weight is viewed as N×K = ``weight.reshape(N, -1)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError
from ..patterns import NM, Channel, Dense, SparsityPattern, Unstructured, parse_pattern
from ..train import evaluate, refresh_pruned, train
from ..workload import WorkloadLike, as_workload, check_workload
from .criteria import Criterion, LayerContext, LayerStats, get_criterion
from .method import PatternPruning, as_matrix
from .plan import PruningPlan
from .schedules import (agp_event, agp_steps, at_fraction, check_agp_budget, check_schedule,
                        finetune_split, iterative_fractions, nm_levels, step_fractions)

__all__ = ["Target", "prunable_layers", "collect_stats", "compute_scores", "global_patterns",
           "apply_patterns", "current_masks", "apply_masks", "make_permanent", "prune_model",
           "PruneResult", "SCOPES", "layer_graph", "mask_dead_rows", "mask_dead_row_followers",
           "per_sample_grad_sq", "compose_patterns", "compensate", "rescore_steps", "RESCORE_STEPS"]

SCOPES = ("layer", "global")

#: scorings from dense to the final pattern, by default, for a criterion whose scores come from
#: the loss's gradients (taylor, hessian) under global scope (:func:`rescore_steps`)
RESCORE_STEPS = 16


@dataclass(frozen=True, slots=True)
class Target:
    """One prunable weight: ``getattr(module, param)`` viewed as N×K."""

    name: str
    module: nn.Module
    param: str

    @property
    def weight(self) -> torch.Tensor:
        """The effective (masked) weight as N×K, detached."""
        return as_matrix(getattr(self.module, self.param).detach())

    @property
    def orig(self) -> nn.Parameter:
        """The trained parameter (``weight_orig`` once pruned)."""
        orig = getattr(self.module, self.param + "_orig", None)
        return orig if orig is not None else getattr(self.module, self.param)


def prunable_layers(model: nn.Module) -> dict[str, Target]:
    """Every prunable weight of ``model``, by layer name, in module order."""
    out: dict[str, Target] = {}
    for path, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            out[path] = Target(path, module, "weight")
        elif isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim:
            name = f"{path}.in_proj" if path else "in_proj"
            out[name] = Target(name, module, "in_proj_weight")
    return out


# -- calibration statistics --------------------------------------------------------------------

def _padding(module: nn.Module) -> tuple[int, ...]:
    pad = module.padding
    if isinstance(pad, str):  # 'same' / 'valid'
        return tuple(0 if pad == "valid" else (k - 1) * d // 2 for k, d in zip(module.kernel_size, module.dilation))
    return tuple(pad)


def _input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of its K columns, (groups, rows, K): im2col rows for convs."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if isinstance(module, nn.Conv1d):
            x = x.unsqueeze(2)
            k, d, p, s = (1, *module.kernel_size), (1, *module.dilation), (0, *_padding(module)), (1, *module.stride)
        else:
            k, d, p, s = module.kernel_size, module.dilation, _padding(module), module.stride
        cols = F.unfold(x, k, dilation=d, padding=p, stride=s)  # (B, C·kh·kw, L)
        g = module.groups
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        return rows.reshape(rows.shape[0], g, -1).transpose(0, 1)
    return x.reshape(1, -1, x.shape[-1])


def _input_columns(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Σ x_j² per K column of :func:`_input_rows`, shaped (1, K) or, for grouped convs, (N, K)."""
    sq = rows.square().sum(dim=1)
    return sq.repeat_interleave(n // sq.shape[0], dim=0) if sq.shape[0] > 1 else sq


def _observe_input(st: LayerStats, rows: torch.Tensor, n: int, needs: frozenset[str]) -> None:
    """Accumulate the input statistics ``needs`` asks for from one batch's input rows."""
    if "input" in needs:
        st.input_sq = _acc(st.input_sq, _input_columns(rows, n))
    if "gram" in needs:
        r = rows.double()
        st.gram = _acc(st.gram, r.transpose(1, 2) @ r)


def _output_channels(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return y.abs().transpose(0, 1).reshape(y.shape[1], -1).mean(dim=1)
    return y.reshape(-1, y.shape[-1]).abs().mean(dim=0)


def collect_stats(model: nn.Module, targets: Mapping[str, Target], data: WorkloadLike, needs: frozenset[str],
                  *, batches: int = 8, seed: int = 0) -> dict[str, LayerStats]:
    """Accumulate the calibration statistics ``needs`` over ``batches`` calibration batches.

    ``grad``: Σ|w·g| and Σg² per weight (g = ∂L/∂w of each mini-batch's loss, the workload's);
    ``fisher``: Σᵢ gᵢ² and Σᵢ |gᵢ| per weight over the calibration samples (gᵢ = ∂ℓᵢ/∂w of
    sample i's own loss: :func:`per_sample_grad_sq`), and the sample count;
    ``input``: Σx_j² per input column; ``output``: Σ mean|y| per output channel;
    ``gram``: Σ XᵀX of the input rows (:attr:`LayerStats.gram`).
    The model is run in eval mode (batch-norm statistics untouched) and left unchanged.
    """
    stats = {name: LayerStats() for name in targets}
    if not needs:
        return stats
    handles = []
    # MultiheadAttention reads out_proj.weight itself (F.linear), so out_proj's hooks never fire:
    # those layers are observed through a TorchFunctionMode that watches F.linear's weight.
    parent_read = {n for n, t in targets.items() if _read_by_parent(model, t.module)}
    observe = needs & {"input", "output", "gram"}
    if observe:
        for name, t in targets.items():
            st, n = stats[name], t.weight.shape[0]
            if name in parent_read:
                continue
            if isinstance(t.module, nn.MultiheadAttention):
                def mha_hook(module, args, kwargs, st=st, n=n):
                    x = (args[0] if args else kwargs["query"]).detach()
                    x2 = x.reshape(-1, x.shape[-1])
                    _observe_input(st, x2[None], n, needs)
                    y = F.linear(x2, module.in_proj_weight.detach(), module.in_proj_bias)
                    st.output_abs = _acc(st.output_abs, y.abs().mean(0))
                handles.append(t.module.register_forward_pre_hook(mha_hook, with_kwargs=True))
                continue

            def pre(module, args, st=st, n=n):
                _observe_input(st, _input_rows(module, args[0].detach()), n, needs)

            def post(module, args, out, st=st):
                st.output_abs = _acc(st.output_abs, _output_channels(module, out.detach()))
            handles += [t.module.register_forward_pre_hook(pre), t.module.register_forward_hook(post)]
    was_training = model.training
    model.eval()
    names = list(targets)
    params = [targets[n].orig for n in names]
    watch = _LinearWatch({n: (targets[n], stats[n]) for n in parent_read}, needs) \
        if parent_read and observe else contextlib.nullcontext()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel would hide every GEMM
    backward = bool(needs & {"grad", "fisher"})
    try:
        for batch in data.calibration_batches(batches, seed=seed):
            with torch.enable_grad() if backward else torch.no_grad(), watch:
                refresh_pruned(model, grad=backward)
                logits = data.outputs(model, batch)
                if "grad" in needs:
                    loss = data.compute_loss(logits, batch.targets)
                    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph="fisher" in needs)
                    for name, g in zip(names, grads):
                        t, st = targets[name], stats[name]
                        g = torch.zeros_like(t.weight) if g is None else as_matrix(g.detach())
                        st.taylor = _acc(st.taylor, (t.weight * g).abs().double())
                        st.grad_sq = _acc(st.grad_sq, g.double().square())
                if "fisher" in needs:
                    sums = _functional_grad_sums(model, data, batch, params) if batch.index is None else None
                    if sums is None:  # graphs (samples share one forward), or no vmap support
                        sums = _per_sample_grad_sums(data, logits, batch.targets, params)
                    for name, g2, g1 in zip(names, *sums):
                        stats[name].fisher = _acc(stats[name].fisher, as_matrix(g2))
                        stats[name].grad_abs = _acc(stats[name].grad_abs, as_matrix(g1))
                        stats[name].samples += int(logits.shape[0])
            for st in stats.values():
                st.batches += 1
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
        refresh_pruned(model)
        model.train(was_training)
    return stats


def _functional_grad_sums(model: nn.Module, data: WorkloadLike, batch: Any, params: list[torch.Tensor], *,
                          chunk: int = 32) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """(Σᵢ gᵢ², Σᵢ |gᵢ|) per parameter with ``vmap(grad(loss of one sample))`` over the batch's samples.

    The usual per-sample-gradient recipe (``torch.func.functional_call``), an order of magnitude
    faster than :func:`per_sample_grad_sq` when samples are independent rows of the inputs (not
    a graph's nodes).  Returns None if the model or loss has no vmap support (the caller then
    uses :func:`per_sample_grad_sq`).
    """
    from torch.func import grad, vmap
    from torch.nn.utils.stateless import _reparametrize_module  # what torch.func.functional_call uses

    kwargs = dict(batch.kwargs or {})
    if not all(isinstance(v, torch.Tensor) for v in (*batch.inputs, *kwargs.values())):
        return None
    by_id = {id(p): n for n, p in model.named_parameters()}
    keys = [by_id.get(id(p)) for p in params]
    if None in keys:
        return None
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in keys}
    fixed.update(dict(model.named_buffers()))

    def loss_one(tp: dict[str, torch.Tensor], inputs: tuple, kw: dict, target: torch.Tensor) -> torch.Tensor:
        one = type(batch)(tuple(x.unsqueeze(0) for x in inputs), target.unsqueeze(0), None,
                          {k: v.unsqueeze(0) for k, v in kw.items()} or None)
        # functional_call's reparametrisation, plus a refresh so that pruned weights read by a
        # parent module (MHA out_proj) follow the substituted *_orig too
        with _reparametrize_module(model, {**fixed, **tp}):
            refresh_pruned(model, grad=True)
            return data.compute_loss(data.outputs(model, one), one.targets)

    tp = {k: p.detach() for k, p in zip(keys, params)}
    total = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    total_abs = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    rows = int(batch.targets.shape[0])
    try:
        for start in range(0, rows, chunk):
            sl = slice(start, min(rows, start + chunk))
            g = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(
                tp, tuple(x[sl] for x in batch.inputs), {k: v[sl] for k, v in kwargs.items()}, batch.targets[sl])
            for acc, acc_abs, k in zip(total, total_abs, keys):
                gk = g[k].detach().double()
                acc += gk.square().sum(0)
                acc_abs += gk.abs().sum(0)
    except Exception:  # noqa: BLE001 - an op without a batching rule: use the shared-forward path
        return None
    finally:
        refresh_pruned(model)
    return total, total_abs


def per_sample_grad_sq(data: WorkloadLike, outputs: torch.Tensor, targets: torch.Tensor,
                       params: list[torch.Tensor], *, chunk: int = 32) -> list[torch.Tensor]:
    """Σᵢ gᵢ² per parameter, gᵢ = ∂ℓ(outputᵢ, targetᵢ)/∂θ the gradient of sample i's own loss.

    The first of :func:`_per_sample_grad_sums`, whose docstring says how.
    """
    return _per_sample_grad_sums(data, outputs, targets, params, chunk=chunk)[0]


def _per_sample_grad_sums(data: WorkloadLike, outputs: torch.Tensor, targets: torch.Tensor,
                          params: list[torch.Tensor], *, chunk: int = 32
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(Σᵢ gᵢ², Σᵢ |gᵢ|) per parameter, gᵢ the gradient of sample i's own loss.

    The forward pass is shared: the loss gradient of each output row, ∂ℓᵢ/∂outputᵢ
    (``torch.func.vmap(grad(...))``), is back-propagated as a batch of one-hot cotangents with
    ``torch.autograd.grad(..., is_grads_batched=True)`` (a vmap over the backward pass), in
    chunks of ``chunk`` samples.  Rows are samples (graph tasks: the scored nodes).  A loss or
    model without batching rules falls back to one backward pass per sample.
    """
    from torch.func import grad, vmap

    out = outputs.detach()
    rows = out.shape[0]

    def one(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return data.compute_loss(o.unsqueeze(0), t.unsqueeze(0))

    try:
        g_out = vmap(grad(one))(out, targets)
    except Exception:  # noqa: BLE001 - a user loss without vmap support: one sample at a time
        g_out = torch.stack([torch.autograd.grad(one(o.requires_grad_(), t), o)[0]
                             for o, t in zip(out.clone(), targets)])
    total = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    total_abs = [torch.zeros(p.shape, dtype=torch.float64) for p in params]

    def add(grads: tuple[torch.Tensor | None, ...]) -> None:  # grads: (samples, *shape) each
        for acc, acc_abs, g in zip(total, total_abs, grads):
            if g is not None:
                acc += g.double().square().sum(0)
                acc_abs += g.double().abs().sum(0)

    for start in range(0, rows, chunk):
        idx = torch.arange(start, min(rows, start + chunk))
        ct = torch.zeros((len(idx), *out.shape), dtype=out.dtype)
        ct[torch.arange(len(idx)), idx] = g_out[idx]
        try:
            add(torch.autograd.grad(outputs, params, grad_outputs=ct, retain_graph=True,
                                    is_grads_batched=True, allow_unused=True))
        except RuntimeError:  # an op without a batching rule: loop over the samples
            for c in ct:
                gs = torch.autograd.grad(outputs, params, grad_outputs=c, retain_graph=True, allow_unused=True)
                add(tuple(None if g is None else g[None] for g in gs))
    return total, total_abs


def _read_by_parent(model: nn.Module, module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) and m.out_proj is module for m in model.modules())


class _LinearWatch(TorchFunctionMode):
    """Observe ``MultiheadAttention.out_proj``: its input is the attention output.

    ``F.multi_head_attention_forward`` is re-run with an identity output projection, which
    yields that input; the real projection is then applied here with ``F.linear``, so values
    and gradients are those of the original call.
    """

    def __init__(self, watched: dict[str, tuple[Target, LayerStats]], needs: frozenset[str]) -> None:
        super().__init__()
        self.watched = watched
        self.needs = needs

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward and len(args) >= 13:
            for t, st in self.watched.values():
                w = getattr(t.module, t.param)
                if args[11] is w:
                    e = w.shape[1]
                    eye = torch.eye(e, dtype=w.dtype)
                    pre, attn = func(*args[:11], eye, torch.zeros(e, dtype=w.dtype), *args[13:], **kwargs)
                    out = F.linear(pre, w, args[12])
                    x = pre.detach()
                    _observe_input(st, x.reshape(1, -1, e), w.shape[0], self.needs)
                    st.output_abs = _acc(st.output_abs, _output_channels(t.module, out.detach()))
                    return out, attn
        return func(*args, **kwargs)


def _acc(total: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    value = value.double()
    return value if total is None else total + value


def compute_scores(model: nn.Module, data: WorkloadLike | None, criterion: str | Criterion,
                   patterns: Mapping[str, SparsityPattern], *, seed: int = 0, calib_batches: int = 8,
                   targets: Mapping[str, Target] | None = None) -> dict[str, torch.Tensor]:
    """N×K float64 scores of ``criterion`` for every layer in ``patterns``.

    Entries an earlier pruning step removed score 0.  Criteria that need calibration data
    (``taylor``, ``hessian``, ``activation``, ``obs``) read ``calib_batches`` calibration batches of
    ``data`` (a built-in task or a :class:`~hwprune.workload.Workload`).
    """
    crit = get_criterion(criterion)
    targets = targets or prunable_layers(model)
    chosen = {n: targets[n] for n in patterns}
    if crit.needs and data is None:
        raise ConfigError(f"criterion {crit.name!r} needs calibration data: give data=")
    stats = collect_stats(model, chosen, data, crit.needs, batches=calib_batches, seed=seed) \
        if crit.needs else {n: LayerStats() for n in chosen}
    scores = {}
    for name, t in chosen.items():
        s = crit(LayerContext(name, t.weight, patterns[name], stats[name], seed))
        mask = getattr(t.module, t.param + "_mask", None)
        if mask is not None:
            s = s * as_matrix(mask).to(s.dtype)
        scores[name] = s
    return scores


def compensate(model: nn.Module, data: WorkloadLike, criterion: str | Criterion,
               weights: Mapping[str, torch.Tensor], patterns: Mapping[str, SparsityPattern], *,
               order: list[str] | None = None, seed: int = 0, calib_batches: int = 8,
               targets: Mapping[str, Target] | None = None) -> None:
    """Apply ``criterion``'s weight update to the layers of ``weights`` after they were masked.

    ``weights`` are each layer's N×K effective weights *before* the new mask; the kept entries
    of ``weight_orig`` take ``criterion.update``'s values (pruned ones are masked anyway, so the
    masks stay ``torch.nn.utils.prune`` masks).  Layers go in execution ``order`` and each one's
    calibration statistics are read from the model as compensated so far, so a layer fits the
    inputs the pruned upstream layers actually give it (SparseGPT's sequential order).
    """
    crit = get_criterion(criterion)
    if crit.update is None:
        return
    targets = targets or prunable_layers(model)
    names = [n for n in (order or []) if n in weights] + [n for n in weights if n not in (order or [])]
    for name in names:
        t = targets[name]
        mask = getattr(t.module, t.param + "_mask", None)
        if mask is None:
            continue
        stats = collect_stats(model, {name: t}, data, crit.needs, batches=calib_batches, seed=seed)
        keep = as_matrix(mask.detach()) != 0
        new = crit.update(LayerContext(name, weights[name], patterns[name], stats[name], seed), keep)
        orig = t.orig
        with torch.no_grad():
            fitted = torch.where(keep, new.to(orig.dtype), as_matrix(orig.detach()))
            orig.copy_(fitted.reshape(orig.shape))
        refresh_pruned(model)


def global_patterns(scores: Mapping[str, torch.Tensor], density: float, *, min_density: float = 0.02,
                    row_floor: int = 1) -> dict[str, Unstructured]:
    """One threshold across layers (with per-layer and per-row floors) → per-layer densities.

    Every layer first keeps its best ``row_floor`` entries of each row and at least its
    ``⌈min_density·size⌉`` best entries; the remaining budget of ``round(density·total)`` goes
    to the highest scores anywhere.  Ties break by layer order then position, deterministically.
    With the same ``row_floor``, :func:`~hwprune.prune.method.layer_mask` of each layer's
    density then keeps exactly the entries this ranking chose.
    """
    if not 0.0 < min_density <= 1.0:
        raise ConfigError(f"per-layer minimum density must lie in (0, 1], not {min_density!r}")
    names = list(scores)
    mats = {n: scores[n].detach().double().cpu().numpy().reshape(scores[n].shape[0], -1) for n in names}
    sizes = {n: mats[n].size for n in names}
    total = sum(sizes.values())
    target = max(1, round(density * total))
    floors = {n: min(sizes[n], max(1, math.ceil(min_density * sizes[n]),
                                   mats[n].shape[0] * min(row_floor, mats[n].shape[1])))
              for n in names}
    budget = target - sum(floors.values())
    if budget < 0:
        raise ConfigError(f"global density {density:g} is below the per-layer floor {min_density:g} "
                          f"({sum(floors.values())} weights kept by the floors alone)")
    rest, owner = [], []
    for i, n in enumerate(names):
        s = mats[n]
        # the row floor's entries come first, then the layer's best: its floor takes the head
        rank = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1, kind="stable")
        priority = np.where(rank < row_floor, np.inf, s).ravel()
        order = np.argsort(-priority, kind="stable")
        flat = s.ravel()[order]
        rest.append(flat[floors[n]:])
        owner.append(np.full(flat.size - floors[n], i))
    keep = {n: floors[n] for n in names}
    if budget > 0:
        allv, allo = np.concatenate(rest), np.concatenate(owner)
        order = np.argsort(-allv, kind="stable")[:budget]
        counts = np.bincount(allo[order], minlength=len(names))
        for i, n in enumerate(names):
            keep[n] += int(counts[i])
    return {n: Unstructured(keep[n] / sizes[n]) for n in names}


def apply_patterns(targets: Mapping[str, Target], patterns: Mapping[str, SparsityPattern],
                   scores: Mapping[str, torch.Tensor],
                   followers: Mapping[str, list[tuple[nn.Module, str]]] | None = None, *,
                   row_floor: int = 1) -> None:
    """Prune each layer to its pattern with :class:`PatternPruning` (torch.nn.utils.prune).

    Pruning composes: a layer pruned before keeps every earlier zero (new mask = old AND new).
    Unstructured patterns keep ``row_floor`` weights per live output row.  Any output row left
    all-zero (a removed channel, whatever pattern removed it) gets its bias and the batch-norm
    that reads the layer (``followers``) masked too (:func:`mask_dead_rows`), so it outputs
    exactly zero — what physical shrinking computes — instead of a constant BN would amplify.
    """
    for name, pat in patterns.items():
        t = targets[name]
        w = getattr(t.module, t.param)
        PatternPruning.apply(t.module, t.param, pat, importance_scores=scores[name].reshape(w.shape),
                             row_floor=row_floor)
        mask_dead_rows(t, (followers or {}).get(name, []))


def mask_dead_rows(target: Target, followers: list[tuple[nn.Module, str]] = ()) -> bool:
    """Mask the bias and ``followers`` (batch-norm weight and bias) of ``target``'s all-zero rows.

    The one place a removed output channel's other parameters are zeroed, with
    ``torch.nn.utils.prune.custom_from_mask`` (so they stay zero through fine-tuning, and a
    second call only removes more).  Returns whether any row is all-zero.
    """
    mask = getattr(target.module, target.param + "_mask", None)
    if mask is None:
        return False
    rows = as_matrix(mask).any(dim=1)
    if bool(rows.all()):
        return False
    w = getattr(target.module, target.param)
    own = [(target.module, "bias")] if target.param == "weight" else []
    for module, pname in own + list(followers):
        p = getattr(module, pname, None)
        if p is not None and p.shape[:1] == rows.shape:
            prune.custom_from_mask(module, pname, rows.to(w.dtype).reshape(p.shape))
    return True


def mask_dead_row_followers(model: nn.Module, names: list[str] | None,
                            example_inputs: tuple[torch.Tensor, ...]) -> None:
    """:func:`mask_dead_rows` for the layers ``names`` (default: every masked layer) of ``model``.

    Used when masks are re-applied from a file (checkpoints), so a removed row stays exactly
    zero through further fine-tuning, as :func:`apply_patterns` arranges when pruning.
    """
    targets = prunable_layers(model)
    _, followers = layer_graph(model, example_inputs, targets)
    for name in targets if names is None else names:
        mask_dead_rows(targets[name], followers.get(name, []))


def compose_patterns(old: SparsityPattern | None, new: SparsityPattern) -> SparsityPattern:
    """The pattern to record for a layer pruned to ``old`` and then to ``new``.

    The mask is the AND of both; what the array needs to know is the issue width, which the
    tighter N:M pattern sets (whole zero rows are packed out from the mask itself, see
    :mod:`hwprune.schedule`).  So: the N:M pattern of lower density if either is N:M, else
    ``new``.  The full sequence is kept in :attr:`PruneResult.history`.
    """
    nms = [p for p in (old, new) if isinstance(p, NM)]
    if nms:
        return min(nms, key=lambda p: (p.density, p.m))
    return new


def current_masks(model: nn.Module, targets: Mapping[str, Target] | None = None) -> dict[str, np.ndarray]:
    """N×K boolean masks of every pruned layer (layers never pruned are absent)."""
    targets = targets or prunable_layers(model)
    out = {}
    for name, t in targets.items():
        mask = getattr(t.module, t.param + "_mask", None)
        if mask is not None:
            out[name] = as_matrix(mask).detach().cpu().numpy().astype(bool)
    return out


def apply_masks(model: nn.Module, masks: Mapping[str, Any]) -> nn.Module:
    """Re-apply stored N×K masks with ``torch.nn.utils.prune.custom_from_mask``."""
    targets = prunable_layers(model)
    unknown = sorted(set(masks) - set(targets))
    if unknown:
        raise ConfigError(f"masks name layers the model does not have: {', '.join(unknown)}")
    for name, mask in masks.items():
        t = targets[name]
        w = getattr(t.module, t.param)
        m = torch.as_tensor(np.asarray(mask)).to(torch.bool)
        if m.shape != as_matrix(w).shape:
            raise ConfigError(f"mask of {name!r} has shape {tuple(m.shape)}, the layer is "
                              f"N×K = {tuple(as_matrix(w).shape)}")
        prune.custom_from_mask(t.module, t.param, m.reshape(w.shape).to(w.dtype))
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """``prune.remove`` on every pruned tensor: weights hold the zeros, hooks and masks go."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def layer_graph(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                targets: Mapping[str, Target]) -> tuple[list[str], dict[str, list[tuple[nn.Module, str]]]]:
    """(targets in execution order, batch-norms reading each target's output directly)."""
    order: list[str] = []
    produced: dict[int, str] = {}
    followers: dict[str, list[tuple[nn.Module, str]]] = {}
    handles = []
    for name, t in targets.items():
        def post(module, args, out, name=name):
            if name not in order:
                order.append(name)
            if isinstance(out, torch.Tensor):
                produced[id(out)] = name
        handles.append(t.module.register_forward_hook(post))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            def pre(module, args):
                src = produced.get(id(args[0]))
                if src is not None and all(m is not module for m, _ in followers.get(src, [])):
                    followers.setdefault(src, []).extend([(module, "weight"), (module, "bias")])
            handles.append(module.register_forward_pre_hook(pre))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order, followers


# -- the engine --------------------------------------------------------------------------------

@dataclass(slots=True)
class PruneResult:
    """Outcome of :func:`prune_model`: the model (pruned in place, masks via torch prune)."""

    model: nn.Module
    patterns: dict[str, SparsityPattern]
    masks: dict[str, np.ndarray]
    criterion: str
    scope: str
    schedule: str
    steps: int
    finetune_epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    #: optimizer steps of fine-tuning after each prune round (the budget's split)
    finetune_steps: list[int] = field(default_factory=list)
    #: decisions the engine took that the caller should know (e.g. rounds capped)
    notes: list[str] = field(default_factory=list)
    #: times the criterion scored the model on its way to the final pattern (:func:`rescore_steps`)
    scorings: int = 0

    @property
    def density(self) -> float:
        """Fraction of the pruned layers' weights kept."""
        kept = sum(int(m.sum()) for m in self.masks.values())
        size = sum(m.size for m in self.masks.values())
        return kept / size if size else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "scope": self.scope, "schedule": self.schedule,
                "steps": self.steps, "finetune_epochs": self.finetune_epochs,
                "patterns": {k: str(v) for k, v in self.patterns.items()},
                "layer_density": {k: float(m.mean()) for k, m in self.masks.items()},
                "density": self.density, "history": list(self.history),
                "finetune_steps": list(self.finetune_steps), "scorings": self.scorings,
                "notes": list(self.notes)}


def _resolve_patterns(targets: Mapping[str, Target], order: list[str],
                      pattern: SparsityPattern | str | Mapping[str, SparsityPattern | str] | None,
                      plan: PruningPlan | None) -> dict[str, SparsityPattern]:
    if (pattern is None) == (plan is None):
        raise ConfigError("give exactly one of a pattern and a plan")
    if plan is not None:
        plan.check_layers(targets)
        chosen = dict(plan.layers)
    elif isinstance(pattern, Mapping):
        chosen = PruningPlan.make("-", pattern).layers
        PruningPlan("-", chosen).check_layers(targets)
        chosen = dict(chosen)
    else:
        pat = parse_pattern(pattern)
        chosen = {n: pat for n in targets}
        # removing output channels of the classifier removes classes: keep the last layer whole
        if isinstance(pat, Channel) and order:
            chosen.pop(order[-1], None)
    return {n: p for n, p in chosen.items() if not isinstance(p, Dense)}


def prune_model(model: nn.Module, what: Any = None, /, data: WorkloadLike | str | None = None, *,
                criterion: str | Criterion = "l1",
                pattern: SparsityPattern | str | Mapping[str, SparsityPattern | str] | None = None,
                plan: PruningPlan | None = None, scope: str = "layer", schedule: str = "oneshot",
                steps: int | None = None, finetune_epochs: int | None = None,
                min_density: float = 0.02, calib_batches: int = 8, lr: float | None = None,
                row_floor: int = 1, rescore: int | None = None, seed: int = 0,
                progress: bool = False) -> PruneResult:
    """Prune ``model`` in place to ``pattern`` (or a per-layer ``plan``) and fine-tune it.

    Pruning composes: a model pruned before keeps every earlier zero, the new pattern chooses
    among the survivors, and :attr:`PruneResult.patterns` records the combination
    (:func:`compose_patterns`).

    ``prune_model(model, "2:4", data=workload)``; the older form ``prune_model(model, task,
    pattern="2:4")`` (data second) is accepted too.

    Parameters
    ----------
    model : nn.Module
        A trained model; pruned in place (``weight_orig``/``weight_mask``, torch prune).
    what : str, SparsityPattern, mapping or workload, positional
        The pattern (or layer name → pattern), or — older form — the data.
    data : WorkloadLike or str
        Calibration and fine-tuning data: a built-in task (or its name) or an
        :class:`hwprune.Workload` built from the user's DataLoaders, loss and metric.
    criterion : str
        A registered criterion: l1, l2, random, taylor, hessian, activation, obs.  A criterion
        with an ``update`` (``obs``) also re-fits the kept weights after each pruning step
        (:func:`compensate`).
    pattern : str, SparsityPattern or mapping
        One pattern for every prunable layer (channel patterns spare the final classifier), or
        layer name → pattern.  Exclusive with ``plan``.
    plan : PruningPlan, optional
        Per-layer patterns (hybrid); layers not in the plan stay dense.
    scope : ``"layer"`` or ``"global"``
        ``global`` (unstructured only) ranks all layers' scores against one threshold, every
        layer keeping at least ``min_density``.
    schedule : ``"oneshot"``, ``"iterative"`` or ``"agp"``
        iterative rounds keep the overall density d^(i/k), N:M layers stepping through distinct
        levels (rounds are capped at M − N, with a note), and fine-tune after each round, the
        final model getting half of the budget (:func:`~hwprune.prune.schedules.finetune_split`);
        AGP prunes during fine-tuning on the cubic schedule, reaching the final sparsity after
        3/4 of the fine-tuning steps (refused with the minimum epochs if they cannot fit).
    steps : int, optional
        Prune rounds (iterative) or pruning events (agp); default 1 for oneshot, else 4.
    finetune_epochs : int, optional
        Total fine-tuning budget, shared by all rounds; default ``data.finetune_epochs`` (a
        task: a quarter of its training epochs).  0 prunes without fine-tuning.
    row_floor : int
        Unstructured patterns (layer or global scope) keep at least this many weights in every
        live output row (default 1; 0 turns the floor off).  Rows left all-zero by any pattern
        get their bias and following batch-norm masked (:func:`mask_dead_rows`).
    rescore : int, optional
        How many times the criterion scores the model on the way from dense to the final
        pattern, spread over the schedule's pruning events: each event removes its share in
        ⌈rescore / steps⌉ sub-steps (density moving geometrically, no training in between), the
        criterion re-scoring the partly pruned model before each.  Default
        (:func:`rescore_steps`): :data:`RESCORE_STEPS` for taylor/hessian (gradient-based
        criteria) under global scope, else 1.  Magnitude scores do not move without training,
        so extra scorings change nothing for l1/l2/random.
    lr : float, optional
        Fine-tuning learning rate; default ``data.finetune_lr``.
    seed : int
        Seeds calibration batches, the random criterion and fine-tuning.
    progress : bool
        Rich progress bars for fine-tuning.
    """
    pattern, data = _pattern_and_data(what, pattern, data)
    run = _check_run(data, criterion=criterion, scope=scope, schedule=schedule, steps=steps,
                     finetune_epochs=finetune_epochs, lr=lr, min_density=min_density,
                     calib_batches=calib_batches, row_floor=row_floor, rescore=rescore, seed=seed,
                     progress=progress)
    targets = prunable_layers(model)
    check_workload(model, data)
    order, followers = layer_graph(model, data.example_inputs(2), targets)
    finals = _resolve_patterns(targets, order, pattern, plan)
    global_density = _global_density(run.scope, finals, custom=plan is not None or isinstance(pattern, Mapping))
    if run.schedule == "agp":
        check_agp_budget(run.epochs * data.steps_per_epoch(), run.steps, steps_per_epoch=data.steps_per_epoch())
    session = _Session(model, data, run, targets, order, followers, finals, global_density,
                       PruneResult(model, dict(finals), {}, run.criterion.name, run.scope, run.schedule,
                                   run.steps, run.epochs), _prior_patterns(targets))
    _RUNNERS[run.schedule](session)
    refresh_pruned(model)
    session.result.masks = current_masks(model, targets)
    return session.result


# -- prune_model's steps -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Run:
    """The validated settings of one :func:`prune_model` call."""

    criterion: Criterion
    scope: str
    schedule: str
    steps: int
    epochs: int
    lr: float
    min_density: float
    calib_batches: int
    row_floor: int
    seed: int
    progress: bool
    #: scorings from dense to the final pattern (:func:`rescore_steps`)
    rescore: int = 1


def _pattern_and_data(what: Any, pattern: Any, data: Any) -> tuple[Any, WorkloadLike]:
    """Sort out ``prune_model(model, "2:4", data=d)`` from the older ``prune_model(model, d, pattern=…)``."""
    if what is not None and (isinstance(what, WorkloadLike) or
                             (isinstance(what, str) and data is None and pattern is not None)):
        if data is not None:
            raise ConfigError("give the data once: prune_model(model, pattern, data=...)")
        what, data = None, what
    if what is not None:
        if pattern is not None:
            raise ConfigError("give the pattern once: prune_model(model, pattern, data=...)")
        pattern = what
    if data is None:
        raise ConfigError("prune_model needs data=: a built-in task or an hwprune.Workload")
    return pattern, as_workload(data)


def _check_run(data: WorkloadLike, *, criterion: str | Criterion, scope: str, schedule: str,
               steps: int | None, finetune_epochs: int | None, lr: float | None, min_density: float,
               calib_batches: int, row_floor: int, seed: int, progress: bool, rescore: int | None = None) -> _Run:
    """Validate every setting before any work (errors name the bad value)."""
    crit = get_criterion(criterion)
    if scope not in SCOPES:
        raise ConfigError(f"unknown scope {scope!r}; expected layer or global")
    steps = (1 if schedule == "oneshot" else 4) if steps is None else steps
    check_schedule(schedule, steps)
    if schedule == "oneshot" and steps != 1:
        raise ConfigError(f"the oneshot schedule prunes once; steps={steps} needs iterative or agp")
    epochs = data.finetune_epochs if finetune_epochs is None else finetune_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"fine-tune epochs must be a non-negative integer, not {epochs!r}")
    lr = data.finetune_lr if lr is None else lr
    if isinstance(calib_batches, bool) or not isinstance(calib_batches, int) or calib_batches < 1:
        raise ConfigError(f"calibration batches must be a positive integer, not {calib_batches!r}")
    if isinstance(row_floor, bool) or not isinstance(row_floor, int) or row_floor < 0:
        raise ConfigError(f"row floor must be a non-negative integer, not {row_floor!r}")
    return _Run(crit, scope, schedule, steps, epochs, lr, min_density, calib_batches, row_floor, seed, progress,
                rescore_steps(crit, scope, rescore))


def rescore_steps(criterion: str | Criterion, scope: str, rescore: int | None = None) -> int:
    """How many times ``criterion`` scores the model from dense to the final pattern.

    ``rescore`` if given (a positive integer), else :data:`RESCORE_STEPS` for a criterion whose
    scores come from the loss's gradients (it needs ``grad`` or ``fisher``: taylor, hessian)
    under ``global`` scope, and 1 otherwise.

    Why: a saliency measured once at the dense model ranks each weight as if it alone were
    removed.  At high global sparsity that misjudges a large layer whose many small saliencies
    add up: one-shot 90 % global with no fine-tuning, taylor and hessian cut the digits CNN's
    fc1 to 2–3 % (l1: 7.5 %) and kept 72 % and 68 % accuracy against l1's 89 % (mean of 3
    seeds).  Re-scoring the partly pruned model lets the gradients see the damage done so far
    (the loss rises where a layer starves), as iterative saliency pruning without training does
    (Tanaka et al. 2020, SynFlow; de Jorge et al. 2021, FORCE): with 16 scorings the same runs
    keep 95.0 % and 95.5 % (``benchmarks/pruning_quality.py``).  Magnitude-based and
    activation-based scores are left at one scoring: the former do not move without training,
    and re-scoring ``activation`` made it worse (upstream pruning shrinks ‖x‖ downstream).
    """
    crit = get_criterion(criterion)
    if rescore is None:
        return RESCORE_STEPS if scope == "global" and crit.needs & {"grad", "fisher"} else 1
    if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 1:
        raise ConfigError(f"rescore must be a positive integer (scorings from dense to the final pattern), "
                          f"not {rescore!r}")
    return rescore


def _global_density(scope: str, finals: Mapping[str, SparsityPattern], *, custom: bool) -> float | None:
    """The overall density a global scope distributes, or None for layer scope."""
    if scope != "global":
        return None
    kinds = {p.kind for p in finals.values()}
    if custom or kinds - {"unstructured"}:
        raise ConfigError(f"global scope ranks one unstructured density across layers, not "
                          f"{', '.join(sorted({str(p) for p in finals.values()})) or 'a plan'}")
    return next(iter(finals.values())).density if finals else 1.0


def _prior_patterns(targets: Mapping[str, Target]) -> dict[str, SparsityPattern]:
    """Patterns earlier :class:`PatternPruning` calls left on each layer, composed in order."""
    out: dict[str, SparsityPattern] = {}
    for name, t in targets.items():
        for hook in t.module._forward_pre_hooks.values():
            if getattr(hook, "_tensor_name", None) != t.param:
                continue
            methods = hook._pruning_methods if isinstance(hook, prune.PruningContainer) else (hook,)
            for m in methods:
                if isinstance(m, PatternPruning):
                    out[name] = compose_patterns(out.get(name), m.pattern)
    return out


@dataclass(slots=True)
class _Session:
    """One pruning run: the model, its data and settings, and the record of what was done."""

    model: nn.Module
    data: WorkloadLike
    run: _Run
    targets: dict[str, Target]
    order: list[str]
    followers: dict[str, list[tuple[nn.Module, str]]]
    finals: dict[str, SparsityPattern]
    global_density: float | None
    result: PruneResult
    prior: dict[str, SparsityPattern] = field(default_factory=dict)
    #: fraction of the final sparsity (and N:M progress) reached so far
    reached: tuple[float, float] = (0.0, 0.0)

    def prune_to(self, fraction: float, where: dict[str, Any], *, progress: float | None = None) -> None:
        """Prune every layer to ``fraction`` of its final sparsity (N:M: level ``progress``),
        in ⌈rescore / steps⌉ re-scored sub-steps (:func:`rescore_steps`), one history entry."""
        if not self.finals:
            return
        run = self.run
        k = max(1, math.ceil(run.rescore / run.steps))
        f0, p0 = self.reached
        fracs = step_fractions(f0, fraction, k, self.global_density if self.global_density is not None
                               else self.final_density())
        target = fraction if progress is None else progress
        # N:M has few levels: with sub-steps, one that changes no pattern is skipped
        last = {n: at_fraction(p, f0, progress=p0) for n, p in self.finals.items()} if len(fracs) > 1 else None
        scorings = 0
        for i, f in enumerate(fracs):
            prog = progress if len(fracs) == 1 else p0 + (target - p0) * (i + 1) / len(fracs)
            pats = {n: at_fraction(p, f, progress=prog) for n, p in self.finals.items()}
            if pats == last and self.global_density is None:
                continue
            last = pats
            pats = self._prune_once(f, pats, seed=run.seed + len(self.result.history) + 1000 * i)
            scorings += 1
        self.reached = (fraction, target)
        masks = current_masks(self.model, self.targets)
        kept = sum(int(m.sum()) for m in masks.values())
        self.result.patterns = {n: compose_patterns(self.prior.get(n), p) for n, p in pats.items()}
        self.result.history.append({**where, "fraction": round(fraction, 6),
                                    "patterns": {n: str(p) for n, p in pats.items()},
                                    "density": kept / max(1, sum(m.size for m in masks.values())),
                                    "scorings": scorings})

    def _prune_once(self, fraction: float, pats: dict[str, SparsityPattern], *, seed: int) -> dict[str, SparsityPattern]:
        """Score the model as it is now (calibration batches drawn with ``seed``) and prune to
        ``pats`` (global scope: to ``fraction``'s density under one threshold); returns the
        patterns applied."""
        run = self.run
        self.result.scorings += 1
        scores = compute_scores(self.model, self.data, run.criterion, pats, seed=seed,
                                calib_batches=run.calib_batches, targets=self.targets)
        if self.global_density is not None:
            pats = global_patterns(scores, 1.0 - fraction * (1.0 - self.global_density),
                                   min_density=run.min_density, row_floor=run.row_floor)
        before = {n: self.targets[n].weight.clone() for n in pats} if run.criterion.update else {}
        apply_patterns(self.targets, pats, scores, self.followers, row_floor=run.row_floor)
        compensate(self.model, self.data, run.criterion, before, pats, order=self.order, seed=seed,
                   calib_batches=run.calib_batches, targets=self.targets)
        return pats

    def finetune(self, *, steps: int | None = None, seed: int, description: str, on_step: Any = None) -> None:
        run = self.run
        train(self.model, self.data, epochs=run.epochs, steps=steps, lr=run.lr, seed=seed,
              progress=run.progress, description=description, on_step=on_step)

    def final_density(self) -> float:
        if self.global_density is not None:
            return self.global_density
        kept = sum(p.density * self.targets[n].weight.numel() for n, p in self.finals.items())
        size = sum(self.targets[n].weight.numel() for n in self.finals)
        return kept / size if size else 1.0


def _run_oneshot(s: _Session) -> None:
    s.prune_to(1.0, {"round": 1})
    s.result.finetune_steps = [s.run.epochs * s.data.steps_per_epoch()]
    s.finetune(seed=s.run.seed, description="fine-tune")


def _run_iterative(s: _Session) -> None:
    steps = s.run.steps
    levels = [lv for lv in (nm_levels(p) for p in s.finals.values()) if lv is not None]
    if levels and steps > min(levels):
        nm = ", ".join(sorted({str(p) for p in s.finals.values() if isinstance(p, NM)}))
        s.result.notes.append(f"iterative: {steps} rounds capped at {min(levels)}, the number of distinct "
                              f"N:M levels of {nm}")
        steps = s.result.steps = min(levels)
    split = finetune_split(s.run.epochs * s.data.steps_per_epoch(), steps)
    s.result.finetune_steps = split
    for i, frac in enumerate(iterative_fractions(steps, s.final_density())):
        s.prune_to(frac, {"round": i + 1}, progress=(i + 1) / steps)
        s.finetune(steps=split[i], seed=s.run.seed + i, description=f"fine-tune {i + 1}/{steps}")
        s.result.history[-1]["finetune_steps"] = split[i]
        s.result.history[-1]["val_accuracy"] = evaluate(s.model, s.data, "val")


def _run_agp(s: _Session) -> None:
    total = s.run.epochs * s.data.steps_per_epoch()
    t0, dt = agp_steps(total, s.run.steps)  # validated in prune_model: every event fits before the end
    s.result.finetune_steps = [total]

    def on_step(t: int) -> None:
        event = agp_event(t, t0=t0, dt=dt, n=s.run.steps)
        if event is not None:  # N:M layers step through their levels linearly (distinct ones)
            s.prune_to(event[1], {"round": event[0], "step": t}, progress=event[0] / s.run.steps)

    s.finetune(seed=s.run.seed, description="fine-tune (AGP)", on_step=on_step)


#: schedule name → runner (one per entry of SCHEDULES)
_RUNNERS = {"oneshot": _run_oneshot, "iterative": _run_iterative, "agp": _run_agp}
