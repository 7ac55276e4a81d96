"""Pruned-model checkpoints that load with ``torch.load(path, weights_only=True)``.

The file is a dict of tensors and plain Python values only::

    {"format": "hwprune-checkpoint", "version": 1,
     "arch": "DigitsCNN" | "mypkg.models:make_model", "arch_kwargs": {...},
     "task": "digits_cnn" | None,
     "state_dict": {...},            # masks folded in: pruned weights hold exact zeros
     "masks": {layer: bool N×K},     # re-applied with torch.nn.utils.prune on load
     "patterns": {layer: "2:4"},     # text forms (hwprune.patterns.parse_pattern)
     "metrics": {...},               # JSON-like
     "example_inputs": [tensor, ...],
     "shrunk": bool}                 # channels physically removed: shapes come from state_dict

``arch`` is a registered architecture (:data:`hwprune.tasks.ARCHS`) or, for any other model, the
import path of a factory that builds it, called with ``arch_kwargs`` (JSON-like values only).
Loading imports that factory — never unpickles code (``weights_only=True``): an untrusted or
corrupted file, or a factory that no longer imports or raises, gives one :class:`ExportError`
line naming the path.  ``example_inputs`` are the inputs the model was costed with (batch 1),
which ``hwprune estimate`` uses.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ExportError, HwPruneError, UserCodeError
from .io import write_with
from .patterns import SparsityPattern, parse_pattern
from .tasks import ARCHS, Task, build_arch, load_task
from .userland import is_import_path

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT", "VERSION"]

FORMAT = "hwprune-checkpoint"
VERSION = 1
_KEYS = {"format", "version", "arch", "arch_kwargs", "task", "state_dict", "masks", "patterns",
         "metrics", "example_inputs", "shrunk"}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A loaded checkpoint: ``model`` is rebuilt with its masks applied (torch prune)."""

    path: Path
    arch: str
    arch_kwargs: dict[str, Any]
    task: str | None
    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    patterns: dict[str, SparsityPattern]
    masks: dict[str, np.ndarray]
    metrics: dict[str, Any]
    shrunk: bool


def _plain(value: Any, where: str) -> Any:
    """Validate/convert metrics to JSON-like plain Python (numpy scalars become Python)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: metric keys must be strings, not {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise ConfigError(f"{where}: metrics must be plain numbers, strings, lists or dicts, not "
                      f"{type(value).__name__}")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, arch: str, task: str | Task | None,
                    patterns: Mapping[str, SparsityPattern | str] | None,
                    masks: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None,
                    force: bool = False, arch_kwargs: Mapping[str, Any] | None = None,
                    example_inputs: tuple[torch.Tensor, ...] | None = None) -> Path:
    """Write a checkpoint atomically (refuses to overwrite an existing file unless ``force``).

    Parameters
    ----------
    path : path
        Output file (``.pt``).
    model : nn.Module
        Dense, masked (``torch.nn.utils.prune``) or physically shrunk.
    arch : str
        Registered architecture name (:data:`hwprune.tasks.ARCHS`) or the import path of the
        model's factory (``package.module:function``; called with ``arch_kwargs`` on load).
    task : str, Task, Workload or None
        Built-in task the model solves (recorded; gives ``arch_kwargs`` and example inputs by
        default), or a user's workload (gives example inputs; not recorded).
    patterns : mapping, optional
        Layer name → pattern (object or text) the layers were pruned to.
    masks : mapping, optional
        Layer name → N×K boolean mask; default: the model's own torch-prune masks.
    metrics : mapping, optional
        JSON-like figures to keep with the weights.
    arch_kwargs, example_inputs : optional
        Override what ``task`` provides.
    """
    from .prune.engine import current_masks, make_permanent, prunable_layers
    from .train import clone_model

    if arch not in ARCHS and not is_import_path(arch):
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))} or a "
                          "factory's import path 'package.module:function'")
    task_obj = load_task(task) if isinstance(task, str) else task
    if arch_kwargs is None:
        arch_kwargs = dict(task_obj.arch_kwargs) if isinstance(task_obj, Task) and task_obj.arch == arch else {}
    if example_inputs is None:
        if task_obj is not None:
            example_inputs = task_obj.example_inputs(1)
        elif hasattr(model, "example_input"):
            example_inputs = tuple(model.example_input(1))
        else:
            raise ConfigError("save_checkpoint needs example_inputs when no task is given")
    masks = current_masks(model) if masks is None else dict(masks)
    layers = prunable_layers(model)
    clean_masks = {}
    for name, m in masks.items():
        if name not in layers:
            raise ConfigError(f"mask for unknown layer {name!r}; layers: {', '.join(layers)}")
        t = torch.as_tensor(np.asarray(m)).to(torch.bool).clone()
        if t.shape != layers[name].weight.shape:
            raise ConfigError(f"mask of {name!r} has shape {tuple(t.shape)}, the layer is N×K = "
                              f"{tuple(layers[name].weight.shape)}")
        clean_masks[name] = t
    pats = {str(k): str(parse_pattern(v)) for k, v in (patterns or {}).items()}
    baked = make_permanent(clone_model(model))
    fresh = build_arch(arch, arch_kwargs)
    shrunk = any(fresh.state_dict()[k].shape != v.shape for k, v in baked.state_dict().items()
                 if k in fresh.state_dict())
    payload = {
        "format": FORMAT, "version": VERSION, "arch": arch, "arch_kwargs": _plain(dict(arch_kwargs), "arch_kwargs"),
        "task": task_obj.name if isinstance(task_obj, Task) else None,  # a user's data is not stored
        "state_dict": {k: v.detach().clone() for k, v in baked.state_dict().items()},
        "masks": clean_masks, "patterns": pats, "metrics": _plain(dict(metrics or {}), "metrics"),
        "example_inputs": [t.detach().clone() for t in example_inputs], "shrunk": bool(shrunk),
    }
    return write_with(path, lambda tmp: torch.save(payload, tmp), force=force)


def _resize_to(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give ``model``'s parameters and buffers the stored shapes (physically shrunk models)."""
    own = model.state_dict()
    for key, value in state.items():
        if key not in own or own[key].shape == value.shape:
            continue
        prefix, _, leaf = key.rpartition(".")
        module = model.get_submodule(prefix) if prefix else model
        empty = torch.empty(value.shape, dtype=value.dtype)
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(empty, requires_grad=module._parameters[leaf].requires_grad)
        else:
            module._buffers[leaf] = empty
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and leaf == "weight":
            module.out_channels, module.in_channels = value.shape[0], value.shape[1] * module.groups
        elif isinstance(module, nn.Linear) and leaf == "weight":
            module.out_features, module.in_features = value.shape
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and leaf == "weight":
            module.num_features = value.shape[0]


def _check_shapes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """ExportError naming the first tensor whose shape is not the architecture's (not shrunk)."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and isinstance(value, torch.Tensor) and own[key].shape != value.shape:
            raise ExportError(f"{key} has shape {tuple(value.shape)}, the architecture's is "
                              f"{tuple(own[key].shape)} (and the checkpoint is not marked shrunk)")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises
    ------
    ExportError
        The file is missing, not an hwprune checkpoint, or corrupted (the message names it).
    """
    from .prune.engine import apply_masks, mask_dead_row_followers

    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: we refuse them below
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(p, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise ExportError(f"{p}: not a readable hwprune checkpoint (it holds pickled objects that "
                          "weights_only=True refuses to load)") from None
    except Exception as exc:  # zip and torch errors also mean: not a file we can trust
        raise ExportError(f"{p}: not a readable hwprune checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ExportError(f"{p}: not an hwprune checkpoint (no format marker {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ExportError(f"{p}: checkpoint version {data.get('version')!r} is not supported "
                          f"(this hwprune reads version {VERSION})")
    missing = sorted(_KEYS - set(data))
    if missing:
        raise ExportError(f"{p}: corrupted checkpoint, missing {', '.join(missing)}")
    try:
        model = build_arch(data["arch"], data["arch_kwargs"])
    except UserCodeError as exc:
        raise ExportError(f"{p}: cannot rebuild the model: {exc}") from None
    except HwPruneError as exc:
        raise ExportError(f"{p}: corrupted checkpoint: {exc}") from None
    try:
        state = data["state_dict"]
        if data["shrunk"]:
            _resize_to(model, state)
        else:
            _check_shapes(model, state)
        model.load_state_dict(state, strict=True)
        masks = {k: v.numpy().astype(bool) for k, v in data["masks"].items()}
        apply_masks(model, masks)
        patterns = {k: parse_pattern(v) for k, v in data["patterns"].items()}
        inputs = tuple(data["example_inputs"])
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise ExportError(f"{p}: corrupted checkpoint, example inputs are not tensors")
        if masks:  # removed rows: bias and batch-norm masked too, as when pruning
            mask_dead_row_followers(model, list(masks), inputs)
    except HwPruneError as exc:
        raise ExportError(f"{p}: corrupted checkpoint: {exc}") from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ExportError(f"{p}: corrupted checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    model.eval()
    return Checkpoint(p, data["arch"], dict(data["arch_kwargs"]), data["task"], model, inputs, patterns,
                      masks, dict(data["metrics"]), bool(data["shrunk"]))

