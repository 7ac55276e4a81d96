"""Importers: PyTorch modules, ONNX files and SCALE-Sim topology CSVs → ``list[LayerSpec]``.

>>> from hwprune.importers import load_model
>>> specs = load_model("resnet18")          # a zoo name, or model.onnx, topology.csv, ckpt.pt
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..ir import LayerSpec
from .from_onnx import from_onnx
from .from_scalesim import from_scalesim_csv
from .from_torch import from_torch, resolve_weight

__all__ = ["from_torch", "from_onnx", "from_scalesim_csv", "load_model", "resolve_weight",
           "SUFFIXES"]

#: file suffixes :func:`load_model` accepts, and what reads them
SUFFIXES = {".onnx": "ONNX model", ".csv": "SCALE-Sim topology", ".pt": "hwprune checkpoint",
            ".pth": "hwprune checkpoint"}


def load_model(text: str | os.PathLike, *, batch: int = 1) -> list[LayerSpec]:
    """The layers of a zoo model name, an ``.onnx`` file, a SCALE-Sim ``.csv`` or a ``.pt`` checkpoint.

    A checkpoint's recorded sparsity patterns are attached to its layers
    (:attr:`LayerSpec.sparsity`); it is costed with the example inputs it recorded (batch 1),
    repeated to ``batch`` examples.  Other sources have their own shapes: ``batch`` must be 1.

    Raises
    ------
    ConfigError
        If ``text`` is neither a zoo name nor a path with an accepted suffix (the message lists
        both), the file is missing or malformed, or the model has no GEMM-shaped layer.
    UnsupportedLayerError
        If the model contains operators hwprune cannot map.
    ExportError
        If a ``.pt`` file is not a readable hwprune checkpoint (see
        :func:`hwprune.checkpoint.load_checkpoint`).
    """
    raw = os.fspath(text) if isinstance(text, os.PathLike) else text
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"a model must be a zoo name or a file path, not {text!r}")
    raw = raw.strip()
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, not {batch!r}")
    if batch != 1 and Path(raw).suffix.lower() not in (".pt", ".pth"):
        raise ConfigError(f"--batch {batch}: only a checkpoint's example inputs can be batched; "
                          f"{raw!r} has its own shapes")
    specs = _load(raw, batch)
    if not specs:
        raise ConfigError(f"{raw}: no GEMM-shaped layers (Conv, Gemm, MatMul, Linear) to map")
    return specs


def _load(raw: str, batch: int = 1) -> list[LayerSpec]:
    from .. import zoo

    if raw in zoo.names():
        return zoo.layers(raw)
    suffix = Path(raw).suffix.lower()
    if suffix == ".onnx":
        return from_onnx(raw)
    if suffix == ".csv":
        return from_scalesim_csv(raw)
    if suffix in (".pt", ".pth"):
        if not Path(raw).is_file():
            raise ConfigError(f"{raw}: no such checkpoint file")
        from ..checkpoint import load_checkpoint

        ckpt = load_checkpoint(raw)
        patterns = dict(getattr(ckpt, "patterns", None) or {})
        inputs = tuple(t.repeat(batch, *[1] * (t.dim() - 1)) for t in ckpt.example_inputs)
        specs = from_torch(ckpt.model, inputs)
        return [s.with_sparsity(patterns[s.name]) if s.name in patterns else s for s in specs]
    accepted = ", ".join(f"{k} ({v})" for k, v in SUFFIXES.items())
    raise ConfigError(f"unknown model {raw!r}: expected a zoo name ({', '.join(zoo.names())}) "
                      f"or a file ending in {accepted}")
