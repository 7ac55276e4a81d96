"""A user's model, example inputs and data, reached by import path (``package.module:function``).

* ``build_model("mypkg.models:make_model", {"width": 64})`` calls the factory and checks it
  returned an ``nn.Module`` (a factory may also return ``(model, example_inputs)``, as
  :func:`hwprune.zoo.build` does).
* ``example_inputs(model, input_shape="1,3,32,32")`` or ``example="mypkg.data:example_inputs"``
  gives the inputs one forward pass (and the cost model) uses.
* ``load_workload("mypkg.data:make_loaders")`` calls the loaders factory and builds a
  :class:`~hwprune.workload.Workload` (see :func:`~hwprune.workload.workload_from`).

Checkpoints of user models record the factory's import path and keyword arguments
(:mod:`hwprune.checkpoint`), so ``hwprune estimate``/``export``/``sim`` rebuild them the same way.
Every failure is one :class:`~hwprune.errors.UserCodeError` line naming the import path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, UserCodeError
from .userland import call, is_import_path
from .workload import WorkloadLike, workload_from

__all__ = ["build_model", "example_inputs", "parse_shape", "load_workload", "checkpoint_workload",
           "user_layers", "DTYPES"]

#: ``--input-dtype`` names
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}


def build_model(path: str, kwargs: Mapping[str, Any] | None = None) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    """``(model, example inputs or None)`` from the factory at ``path`` called with ``kwargs``."""
    out = call(path, what="model factory", **dict(kwargs or {}))
    inputs = None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module):
        out, inputs = out
        inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not isinstance(out, nn.Module):
        raise UserCodeError(f"model factory {path!r} returned a {type(out).__name__}, not a torch.nn.Module")
    return out, inputs


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` → ``(1, 3, 32, 32)``; ConfigError names a bad shape."""
    try:
        shape = tuple(int(p) for p in str(text).replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-shape must be comma-separated positive integers such as 1,3,32,32, "
                          f"not {text!r}") from None
    if not shape or any(d < 1 for d in shape) or len(shape) > 8:
        raise ConfigError(f"--input-shape must be 1 to 8 positive integers, not {text!r}")
    return shape


def example_inputs(model: nn.Module, *, input_shape: str | tuple[int, ...] | None = None,
                   example: str | None = None, dtype: str = "float32",
                   default: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """One forward pass's inputs: zeros of ``input_shape`` (``dtype``), or what the function at
    ``example`` returns (a tensor or a tuple of tensors), or ``default``."""
    if (input_shape is None) == (example is None):
        if default is not None and input_shape is None:
            return default
        raise ConfigError("give exactly one of --input-shape and --example for a model given by import path")
    if example is not None:
        out = call(example, what="example inputs")
        out = (out,) if isinstance(out, torch.Tensor) else out
        if not isinstance(out, (tuple, list)) or not out or not all(isinstance(t, torch.Tensor) for t in out):
            raise UserCodeError(f"example inputs {example!r} must return a tensor or a tuple of tensors, not "
                                f"{type(out).__name__}")
        return tuple(out)
    if dtype not in DTYPES:
        raise ConfigError(f"--input-dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    if torch.Size(shape).numel() > 1 << 28:
        raise ConfigError(f"--input-shape {','.join(map(str, shape))} asks for over 2^28 values")
    return (torch.zeros(shape, dtype=DTYPES[dtype]),)


def user_layers(path: str, *, input_shape: str | None = None, example: str | None = None,
                dtype: str = "float32", kwargs: Mapping[str, Any] | None = None) -> list:
    """The :class:`~hwprune.ir.LayerSpec` list of the model at ``path`` (``hwprune estimate``)."""
    from .importers import from_torch

    model, default = build_model(path, kwargs)
    inputs = example_inputs(model, input_shape=input_shape, example=example, dtype=dtype, default=default)
    try:
        return from_torch(model.eval(), inputs)
    except ConfigError as exc:
        raise ConfigError(f"model factory {path!r}: {exc}") from None


def load_workload(path: str, **overrides: Any) -> WorkloadLike:
    """The workload of a user's ``make_loaders()`` at ``path`` (overrides: e.g. ``finetune_epochs``)."""
    if not is_import_path(path):
        raise ConfigError(f"--data must be an import path 'package.module:make_loaders', not {path!r}")
    return workload_from(call(path, what="data loaders"), source=path, **overrides)


def checkpoint_workload(ckpt: Any, source: object, data: str | None = None) -> WorkloadLike:
    """The data a checkpoint is fine-tuned, calibrated or run on: the user's loaders at ``data``
    (``pkg.mod:make_loaders``) when given, else the built-in task it records."""
    if data is not None:
        return load_workload(data)
    if ckpt.task is None:
        raise ConfigError(f"{source}: the checkpoint records no built-in task; give --data pkg.mod:make_loaders")
    from .tasks import load_task

    return load_task(ckpt.task)
