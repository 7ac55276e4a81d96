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


def load_model(text: str | os.PathLike) -> list[LayerSpec]:
    """The layers of a zoo model name, an ``.onnx`` file, a SCALE-Sim ``.csv`` or a ``.pt`` checkpoint.

    A checkpoint's recorded sparsity patterns are attached to its layers
    (:attr:`LayerSpec.sparsity`).

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
    specs = _load(raw)
    if not specs:
        raise ConfigError(f"{raw}: no GEMM-shaped layers (Conv, Gemm, MatMul, Linear) to map")
    return specs


def _load(raw: str) -> list[LayerSpec]:
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
        specs = from_torch(ckpt.model, ckpt.example_inputs)
        return [s.with_sparsity(patterns[s.name]) if s.name in patterns else s for s in specs]
    accepted = ", ".join(f"{k} ({v})" for k, v in SUFFIXES.items())
    raise ConfigError(f"unknown model {raw!r}: expected a zoo name ({', '.join(zoo.names())}) "
                      f"or a file ending in {accepted}")
