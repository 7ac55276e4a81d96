"""Import a :class:`torch.nn.Module` as the GEMM-shaped layers it really executes.

The model runs once on its example inputs under a :class:`~torch.overrides.TorchFunctionMode`
that records every compute call — ``F.linear``, ``conv1d``/``conv2d``, ``matmul``/``mm``/``bmm``/
``@``, ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward`` — with the
shapes it was called on.  What is recorded is therefore what runs, in execution order, whatever
the Python structure of the model.  The GEMMs themselves are not computed — each returns zeros of
the right shape, so a ResNet-50 imports in a fraction of its forward time — while everything else
(normalisation, pooling, reshapes) runs as usual.  A model whose control flow or shapes depend on
activation *values* (``nonzero``, data-dependent routing) is therefore not supported.

Names
-----
A weight layer is named by the module path of its parameter (``layer1.0.conv1``, ``fc1``), so
``model.get_submodule(spec.name)`` finds the module.  :func:`resolve_weight` maps any name
below back to ``(module, parameter name)`` for ``torch.nn.utils.prune``.

* ``nn.MultiheadAttention`` at path ``P``: the input projection is what the computation really
  is.  Self-attention (query is key is value, as in every ``TransformerEncoderLayer``) runs one
  fused GEMM with the packed ``in_proj_weight`` → one layer ``P.in_proj`` with N = 3·d (rows q, k,
  v in that order).  Cross-attention runs ``P.in_proj.q`` and ``P.in_proj.kv`` (key is value) or
  ``P.in_proj.q``/``.k``/``.v``, each carrying its row block of ``in_proj_weight``; separate
  projection weights give ``P.q_proj``/``P.k_proj``/``P.v_proj``.  Then ``P.qk`` (Q·Kᵀ) and
  ``P.av`` (A·V), activation × activation products with groups = batch × heads, and
  ``P.out_proj``.
* ``F.scaled_dot_product_attention`` called inside a module at path ``P`` gives ``P.qk`` and
  ``P.av``.
* Any other product of two activations (``torch.matmul``, ``bmm``, ``@`` — the GCN's Â·H) inside
  module ``P`` is ``P.matmul``, ``P.matmul_1``, … (``matmul``, ``matmul_1`` at the root), as
  ``torch.fx`` would name it.
* A weight used a second time (a module applied twice) gives ``name#2``, ``name#3``, …; so do
  the products of the second call of a module.
* A weight that is not a parameter (``torch.nn.utils.prune``'s ``weight = weight_orig ·
  weight_mask``, a parametrization) is named after the module whose ``forward`` uses it, and the
  layer carries that effective (masked) weight.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError, UnsupportedLayerError
from ..ir import ConvGeometry, LayerSpec, same_padding, symmetric_padding

__all__ = ["from_torch", "resolve_weight"]

# Compute calls, matched by the function's name (builtins and Tensor methods alike).
_LINEAR = {"linear"}
_CONV = {"conv1d", "conv2d"}
_MATMUL = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addmm", "addbmm", "mv"}
_SDPA = {"scaled_dot_product_attention"}
_MHA = {"multi_head_attention_forward"}
#: compute operators hwprune cannot lower to its GEMM array (reported, never silently skipped)
_UNSUPPORTED = {
    "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_tbc",
    "convolution", "_convolution", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell",
    "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "bilinear", "einsum", "tensordot",
    "chain_matmul", "multi_dot", "addmv", "addr", "outer", "ger", "kron",
}


def from_torch(model: nn.Module, example_inputs: tuple, *, batch: int | None = None) -> list[LayerSpec]:
    """Run ``model`` once and return its GEMM-shaped layers in execution order.

    Parameters
    ----------
    model
        Any ``nn.Module``.  It runs in eval mode under ``torch.no_grad`` with the fused
        multi-head-attention fast path disabled; its training flags and the fast-path setting are
        restored afterwards, and no parameter is modified.
    example_inputs
        Positional inputs of ``forward`` (a single tensor is accepted too).
    batch
        Re-batch the example inputs along dimension 0 (repeating the first sample) before
        running, for models whose inputs are batch-first.  ``None`` keeps them as they are.

    Returns
    -------
    list of LayerSpec
        Weight layers carry their float weight as N×K and the module path as name (see the
        module docstring for attention and matmul names).

    Raises
    ------
    UnsupportedLayerError
        Listing every unsupported compute operator that ran (``ConvTranspose2d``, ``LSTM``, …)
        with the module path it ran in.
    ConfigError
        If ``model`` is not a module, ``batch`` is not positive, or the forward pass fails.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"from_torch needs a torch.nn.Module, not {type(model).__name__}")
    inputs = _as_tuple(example_inputs)
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"batch must be a positive integer, not {batch!r}")
        inputs = tuple(_rebatch(x, batch) for x in inputs)

    recorder = _Recorder(model)
    try:
        with _eval_state(model), _module_stack(model, recorder), torch.no_grad(), recorder:
            model(*inputs)
    except (UnsupportedLayerError, ConfigError):
        raise
    except Exception as exc:  # the model's own failure: report it as bad input
        raise ConfigError(f"running {type(model).__name__} on its example inputs failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    if recorder.unsupported:
        listed = ", ".join(recorder.unsupported)
        raise UnsupportedLayerError(f"{len(recorder.unsupported)} unsupported compute operation(s): "
                                    f"{listed}")
    return recorder.specs


def resolve_weight(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The ``(module, parameter name)`` holding the weight of layer ``name`` of :func:`from_torch`.

    ``layer1.0.conv1`` → ``(conv1 module, "weight")``; ``…self_attn.in_proj`` (and its ``.q``,
    ``.kv`` … row blocks) → ``(attention module, "in_proj_weight")``; ``…self_attn.q_proj`` →
    ``(attention module, "q_proj_weight")``.  A ``#2`` repeat suffix is ignored.

    Raises
    ------
    ConfigError
        If no such weight exists (for example ``…qk``, which has no weights).
    """
    base = name.split("#", 1)[0]
    parts = base.split(".")
    candidates = [(base, "weight")]
    for proj in ("in_proj", "q_proj", "k_proj", "v_proj"):
        if proj in parts:
            i = parts.index(proj)
            candidates.append((".".join(parts[:i]), f"{proj}_weight"))
    for path, param in candidates:
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError:
            continue
        if isinstance(getattr(module, param, None), torch.Tensor):
            return module, param
    raise ConfigError(f"{type(model).__name__} has no weight for layer {name!r}")


# -- running the model ----------------------------------------------------------------------------

def _as_tuple(example_inputs: object) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise ConfigError("example_inputs must be a tuple of forward's positional inputs, "
                      f"not {type(example_inputs).__name__}")


def _rebatch(x: object, batch: int) -> object:
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        return x
    return x[:1].expand(batch, *x.shape[1:]).clone()


@contextlib.contextmanager
def _eval_state(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel hides the GEMMs
    model.eval()
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _module_stack(model: nn.Module, recorder: _Recorder) -> Iterator[None]:
    """Tell ``recorder`` which module's ``forward`` is running, through forward hooks."""
    handles = []
    for path, module in model.named_modules():
        def pre(mod: nn.Module, args: object, path: str = path) -> None:
            recorder.enter(path, mod)

        def post(mod: nn.Module, args: object, out: object) -> None:
            recorder.stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        recorder.stack.clear()


@dataclass(eq=False)
class _Frame:
    """One running ``forward``: its module, which call of that module it is, products so far."""

    path: str
    module: nn.Module | None
    call: int = 1
    products: dict[str, int] = field(default_factory=dict)


# -- recording ------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Recorder(TorchFunctionMode):
    """Records the compute calls of one forward pass (see the module docstring)."""

    model: nn.Module
    stack: list[_Frame] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    specs: list[LayerSpec] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    params: dict[int, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        TorchFunctionMode.__init__(self)
        for pname, p in self.model.named_parameters():
            self.params.setdefault(_storage_key(p), []).append((pname, p))

    # TorchFunctionMode calls this with itself popped, so nested calls are not seen twice.
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        fname = getattr(func, "__name__", "")
        shape = self._observe(fname, args, kwargs)
        if shape is not None and "out" not in kwargs:
            # Only shapes matter downstream: skip the GEMM itself (ResNet-50 imports in a
            # fraction of its forward time).  Everything else runs for real.
            like = _first_tensor(args)
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        return func(*args, **kwargs)

    def _observe(self, fname: str, args: tuple, kwargs: dict) -> tuple[int, ...] | None:
        """Record a compute call; return its output shape when the call may be skipped."""
        if fname in _MHA:
            self._mha(*args, **kwargs)  # runs for real: it returns a tuple, and is cheap
        elif fname in _LINEAR:
            return self._linear(*args, **kwargs)
        elif fname in _CONV:
            return self._conv(fname, *args, **kwargs)
        elif fname in _MATMUL:
            return self._matmul(fname, args)
        elif fname in _SDPA:
            return self._sdpa(*args, **kwargs)
        elif fname in _UNSUPPORTED:
            self.unsupported.append(f"{self._where()}, torch.{fname.lstrip('_')})")
        return None

    # -- naming ---------------------------------------------------------------------------------
    def enter(self, path: str, module: nn.Module) -> None:
        self.calls[path] = self.calls.get(path, 0) + 1
        self.stack.append(_Frame(path, module, self.calls[path]))

    def _frame(self) -> _Frame:
        if not self.stack:  # a functional call outside any module's forward
            self.stack.append(_Frame("", None))
        return self.stack[-1]

    def _where(self) -> str:
        frame = self._frame()
        kind = type(frame.module).__name__ if frame.module is not None else "function"
        return f"{frame.path or '<root>'} ({kind}"

    def _unique(self, name: str) -> str:
        count = self.used.get(name, 0) + 1
        self.used[name] = count
        return name if count == 1 else f"{name}#{count}"

    def _product_name(self, prefix: str, base: str) -> str:
        """``prefix+base``, ``…base_1`` … within one forward call (as torch.fx numbers repeated
        calls), with ``#n`` appended on the n-th call of the module."""
        frame = self._frame()
        i = frame.products.get(base, 0)
        frame.products[base] = i + 1
        name = prefix + base + (f"_{i}" if i else "")
        return self._unique(name) if frame.call == 1 else self._unique(f"{name}#{frame.call}")

    def _prefix(self) -> str:
        path = self._frame().path
        return f"{path}." if path else ""

    def _param_of(self, t: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """The parameter whose storage ``t`` views, if any."""
        candidates = self.params.get(_storage_key(t), ())
        for pname, p in candidates:  # the exact parameter first, then one it is a view of
            if p.storage_offset() == t.storage_offset() and p.shape == t.shape:
                return pname, p
        return candidates[0] if candidates else None

    def _weight_name(self, w: torch.Tensor) -> str:
        found = self._param_of(w)
        if found is not None:
            pname, p = found
            base, _, leaf = pname.rpartition(".")
            if leaf.endswith("_weight") and leaf != "weight":
                stem = leaf[: -len("_weight")]
                base = f"{base}.{stem}" if base else stem
                if w.shape != p.shape:  # a row block of a packed weight
                    base += "." + _row_block(w, p)
            return base or pname
        # Not a parameter (torch.nn.utils.prune's weight = weight_orig * weight_mask, a
        # parametrization …): the module running the call owns it.
        frame = self._frame()
        return frame.path or (type(frame.module).__name__ if frame.module is not None else "weight")

    # -- compute calls --------------------------------------------------------------------------
    def _linear(self, x: torch.Tensor, weight: torch.Tensor,
                bias: object = None) -> tuple[int, ...] | None:
        n, k = weight.shape
        if x.shape[-1] != k:
            return None  # let torch raise its own error
        tokens = math.prod(x.shape[:-1]) if x.ndim > 1 else 1
        self.specs.append(LayerSpec.linear(self._unique(self._weight_name(weight)), k, n,
                                           tokens=tokens, weight=_np(weight)))
        return (*x.shape[:-1], n)

    def _conv(self, fname: str, x: torch.Tensor, weight: torch.Tensor, bias: object = None,
              stride: object = 1, padding: object = 0, dilation: object = 1,
              groups: int = 1) -> tuple[int, ...] | None:
        one_d = fname == "conv1d"
        dims = 1 if one_d else 2
        batched = x.ndim == dims + 2
        if x.ndim not in (dims + 1, dims + 2) or x.shape[-dims - 1] != weight.shape[1] * groups:
            return None  # let torch raise its own error
        b = x.shape[0] if batched else 1
        spatial = tuple(x.shape[-dims:])
        kernel = tuple(weight.shape[2:])
        stride, dilation = _tuple(stride, dims), _tuple(dilation, dims)
        in_size = list(spatial)
        if isinstance(padding, str):  # 'valid', or 'same' (stride 1: SAME_UPPER)
            pads = []
            for i in range(dims):
                begin, end = (0, 0) if padding == "valid" else same_padding(spatial[i], kernel[i], 1, dilation[i])
                in_size[i], pad = symmetric_padding(spatial[i], begin, end)
                pads.append(pad)
        else:
            pads = list(_tuple(padding, dims))
        if one_d:
            in_size, kernel, stride, pads, dilation = ([1, *in_size], (1, *kernel), (1, *stride),
                                                       [0, *pads], (1, *dilation))
        geom = ConvGeometry.make(in_channels=weight.shape[1] * groups, out_channels=weight.shape[0],
                                 in_size=tuple(in_size), kernel=tuple(kernel), stride=tuple(stride),
                                 padding=tuple(pads), dilation=tuple(dilation), groups=groups, batch=b)
        self.specs.append(LayerSpec.from_conv(self._unique(self._weight_name(weight)), geom,
                                              weight=_np(weight)))
        out = geom.out_size[1:] if one_d else geom.out_size
        return (*x.shape[:-dims - 1], weight.shape[0], *out)

    def _matmul(self, fname: str, args: Sequence[object]) -> tuple[int, ...] | None:
        if fname in ("baddbmm", "addmm", "addbmm"):
            a, b = args[1], args[2]
        elif fname == "__rmatmul__":
            b, a = args[0], args[1]
        else:
            a, b = args[0], args[1]
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or 0 in (a.ndim, b.ndim):
            return None
        try:
            batch = tuple(np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2])))
        except ValueError:
            return None
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            return None  # let torch raise its own error
        m = a.shape[-2] if a.ndim > 1 else 1
        k = a.shape[-1]
        n = b.shape[-1] if b.ndim > 1 else 1
        out = (() if fname == "addbmm" else batch) + (m,) * (a.ndim > 1) + (n,) * (b.ndim > 1)
        if self._param_of(b) is not None and b.ndim == 2:    # X · W: a linear layer, weight Wᵀ
            tokens = math.prod(a.shape[:-1]) if a.ndim > 1 else 1
            self.specs.append(LayerSpec.linear(self._unique(self._weight_name(b)), k, n,
                                               tokens=tokens, weight=_np(b.T)))
        elif self._param_of(a) is not None and a.ndim == 2:  # W · X: Yᵀ = Xᵀ·Wᵀ, X's columns are tokens
            tokens = math.prod(batch) * n
            self.specs.append(LayerSpec.linear(self._unique(self._weight_name(a)), k, m,
                                               tokens=tokens, weight=_np(a)))
        else:
            groups = math.prod(batch) if fname != "addbmm" else a.shape[0]
            self.specs.append(LayerSpec.matmul(self._product_name(self._prefix(), "matmul"), m, k, n,
                                               groups=groups))
        return out

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: object,
              **kwargs: object) -> tuple[int, ...] | None:
        try:
            batch = tuple(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
        except ValueError:
            return None
        if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
            return None
        self._attention(self._prefix(), q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1],
                        math.prod(batch))
        return (*batch, q.shape[-2], v.shape[-1])

    def _attention(self, prefix: str, tgt: int, src: int, head_dim: int, v_dim: int,
                   groups: int) -> None:
        self.specs.append(LayerSpec.matmul(self._product_name(prefix, "qk"), tgt, head_dim, src,
                                           groups=groups))
        self.specs.append(LayerSpec.matmul(self._product_name(prefix, "av"), tgt, src, v_dim,
                                           groups=groups))

    def _mha(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             embed_dim_to_check: int, num_heads: int, in_proj_weight: torch.Tensor | None,
             in_proj_bias: object, bias_k: torch.Tensor | None, bias_v: object,
             add_zero_attn: bool, dropout_p: float, out_proj_weight: torch.Tensor,
             out_proj_bias: object, training: bool = True, key_padding_mask: object = None,
             need_weights: bool = True, attn_mask: object = None,
             use_separate_proj_weight: bool = False, q_proj_weight: torch.Tensor | None = None,
             k_proj_weight: torch.Tensor | None = None, v_proj_weight: torch.Tensor | None = None,
             static_k: torch.Tensor | None = None, static_v: torch.Tensor | None = None,
             **_: object) -> None:
        """Mirror ``F.multi_head_attention_forward``: inputs are (L, B, E) or unbatched (L, E)."""
        found = self._param_of(out_proj_weight)
        if found is not None and found[0].endswith("out_proj.weight"):
            prefix = found[0][: -len("out_proj.weight")]
        else:
            prefix = self._prefix()
        bsz = query.shape[1] if query.ndim == 3 else 1
        tgt, src = query.shape[0], key.shape[0]
        e = query.shape[-1]
        head_dim = e // num_heads

        def proj(suffix: str, x: torch.Tensor, w: torch.Tensor) -> None:
            self.specs.append(LayerSpec.linear(self._unique(prefix + suffix), w.shape[1], w.shape[0],
                                               tokens=math.prod(x.shape[:-1]), weight=_np(w)))

        if not use_separate_proj_weight:
            w = in_proj_weight
            if key is value and query is key:
                proj("in_proj", query, w)
            elif key is value:
                proj("in_proj.q", query, w[:e])
                if static_k is None:
                    proj("in_proj.kv", key, w[e:])
            else:
                proj("in_proj.q", query, w[:e])
                if static_k is None:
                    proj("in_proj.k", key, w[e:2 * e])
                if static_v is None:
                    proj("in_proj.v", value, w[2 * e:])
        else:
            proj("q_proj", query, q_proj_weight)
            if static_k is None:
                proj("k_proj", key, k_proj_weight)
            if static_v is None:
                proj("v_proj", value, v_proj_weight)
        if static_k is not None:
            src = static_k.shape[1]
        else:
            src += int(bias_k is not None)
        src += int(bool(add_zero_attn))
        self._attention(prefix, tgt, src, head_dim, head_dim, bsz * num_heads)
        proj("out_proj", query, out_proj_weight)


def _first_tensor(args: Sequence[object]) -> torch.Tensor:
    return next(a for a in args if isinstance(a, torch.Tensor))


def _storage_key(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return id(t)


def _row_block(w: torch.Tensor, p: torch.Tensor) -> str:
    """Name a row block of a packed (q, k, v) weight: q, k, v, qk, kv."""
    start = (w.storage_offset() - p.storage_offset()) // max(p.stride(0), 1)
    rows = w.shape[0]
    e = p.shape[0] // 3
    names = "qkv"
    if p.shape[0] == 3 * e and start % e == 0 and rows % e == 0:
        return names[start // e: (start + rows) // e]
    return f"rows{start}_{start + rows}"


def _tuple(value: object, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    t = tuple(int(v) for v in value)
    return t * dims if len(t) == 1 else t


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()
