"""Workloads: what pruning, fine-tuning, search and calibration need from a model's world.

A *workload* answers five questions about a model, and nothing else:

* **calibration batches** — a few training batches to score weights or calibrate int8 ranges
  (:meth:`~WorkloadLike.calibration_batches`);
* **a fine-tune step** — one epoch of training batches and the loss on a batch
  (:meth:`~WorkloadLike.train_batches`, :meth:`~WorkloadLike.compute_loss`, plus the recipe:
  ``finetune_epochs``, ``finetune_lr``, ``weight_decay``);
* **an evaluation metric** over a split (:meth:`~WorkloadLike.eval_batches`,
  :meth:`~WorkloadLike.compute_metric`; top-1 accuracy unless told otherwise);
* **the scored output** of the model on a batch (:meth:`~WorkloadLike.outputs`: an output
  adapter such as ``lambda out: out.logits`` for a ``transformers`` ``ModelOutput``);
* **example inputs** for tracing the model (:meth:`~WorkloadLike.example_inputs`).

Two implementations share the protocol :class:`WorkloadLike`: the built-in tasks
(:class:`hwprune.tasks.Task`, tensors in memory) and :class:`Workload`, built from ordinary
PyTorch parts — ``DataLoader``\\ s, a loss function, an optional metric and output adapter —
which streams its loaders and copies nothing into memory::

    data = hwprune.Workload(train_loader, val_loader, torch.nn.functional.cross_entropy,
                            output=lambda out: out.logits)
    hwprune.prune_model(model, "2:4", data=data)

Everything that consumes data — :func:`hwprune.train.train`, :func:`evaluate`,
:func:`hwprune.prune.prune_model`, the search's sensitivity loop and int8 calibration — takes
either, through the functions of this module (:func:`evaluate`, :func:`check_workload`,
:func:`as_workload`, :func:`workload_from`).

Batches
-------
A loader may yield ``(x, y)``, ``(x1, x2, …, y)`` (the last element is the target, the others
are positional inputs of ``forward``) or a dict whose ``"labels"`` (or ``"label"``) entry is the
target and whose other entries are keyword inputs (the Hugging Face convention).  Anything else
needs ``unpack=lambda b: (inputs_tuple, targets)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError, HwPruneError, UserCodeError
from .userland import import_path_of, one_line

__all__ = ["Batch", "WorkloadLike", "Workload", "as_workload", "workload_from", "evaluate",
           "check_workload", "accuracy", "default_output", "first_examples", "SPLITS"]

#: split names a workload answers for
SPLITS = ("train", "val", "test")


class Batch(NamedTuple):
    """One step of data: positional model inputs, targets, the output rows scored (graphs: the
    split's nodes; None = every row) and keyword model inputs (dict batches)."""

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    index: torch.Tensor | None = None
    kwargs: Mapping[str, Any] | None = None

    def __len__(self) -> int:  # type: ignore[override]  # examples scored, not tuple fields
        return int(self.targets.shape[0])


@runtime_checkable
class WorkloadLike(Protocol):
    """What hwprune needs from a model's world (see the module docstring).

    Implemented by :class:`hwprune.tasks.Task` and :class:`Workload`; anything else with these
    members works too.
    """

    name: str
    #: default fine-tuning budget (epochs) and learning rate of a pruning run
    finetune_epochs: int
    finetune_lr: float
    #: Adam weight decay used for (fine-)tuning
    weight_decay: float

    def train_batches(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One epoch of training batches (``generator`` seeds built-in shuffling)."""

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch of :meth:`train_batches`."""

    def calibration_batches(self, n: int, *, seed: int = 0) -> Iterator[Batch]:
        """At most ``n`` training batches for scoring or calibration, seeded."""

    def eval_batches(self, split: str = "val") -> Iterator[Batch]:
        """Every batch of ``split`` (``"val"`` or ``"test"``), in order, unshuffled."""

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The model's scored output tensor on ``batch`` (adapter applied, rows selected)."""

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss (mean over the batch)."""

    def compute_metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The evaluation metric of a whole split's outputs (higher is better)."""

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Positional inputs of one forward pass with ``batch`` examples."""


def first_examples(data: WorkloadLike, n: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of ``split`` as (first positional input, targets), in loader order.

    For single-input models (what the integer reference and the RTL run take); fewer than ``n``
    when the split is smaller.
    """
    xs, ys, have = [], [], 0
    for batch in data.eval_batches(split):
        if have >= n:
            break
        if len(batch.inputs) != 1 or batch.kwargs or batch.index is not None:
            raise ConfigError(f"{data.name}: integer inference takes one input tensor per batch, "
                              f"not {len(batch.inputs)} inputs{' and keyword inputs' if batch.kwargs else ''}")
        take = min(n - have, len(batch))
        xs.append(batch.inputs[0][:take])
        ys.append(batch.targets[:take])
        have += take
    if not xs:
        raise ConfigError(f"{data.name}: the {split} split yields no examples")
    return torch.cat(xs), torch.cat(ys)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]: ``argmax(outputs, -1) == targets``."""
    total = int(targets.numel())
    return int((outputs.argmax(dim=-1) == targets).sum()) / total if total else 0.0


def default_output(out: Any) -> torch.Tensor:
    """A tensor as is; otherwise ``out.logits`` (a ``transformers`` ``ModelOutput``), ``out[0]``
    of a tuple; ConfigError names any other type."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError(f"the model returned a {type(out).__name__}, not a tensor; give an output "
                      f"adapter, e.g. Workload(..., output=lambda out: out.logits)")


def _unpack(item: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, dict[str, Any] | None]:
    """(positional inputs, targets, keyword inputs) of one loader item (module docstring)."""
    if isinstance(item, Mapping):
        label = next((k for k in ("labels", "label") if k in item), None)
        if label is None:
            raise ConfigError(f"a dict batch needs a 'labels' entry, got keys {sorted(item)}")
        return (), item[label], {k: v for k, v in item.items() if k != label}
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return tuple(item[:-1]), item[-1], None
    raise ConfigError(f"a batch must be (inputs..., targets) or a dict with 'labels', not a "
                      f"{type(item).__name__}{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}; "
                      f"give Workload(..., unpack=lambda b: (inputs, targets))")


@dataclass(frozen=True, eq=False)
class Workload:
    """A workload built from ordinary PyTorch parts.

    Parameters
    ----------
    train, val : iterable
        ``DataLoader``\\ s (or any re-iterable of batches, see the module docstring).  ``train``
        gives fine-tuning and calibration batches; ``val`` is what pruning decisions are
        evaluated on.
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar tensor`` (mean over the batch); default
        ``torch.nn.functional.cross_entropy``.
    metric : callable, optional
        ``metric(outputs, targets) -> number`` over a whole split (higher is better); default
        top-1 :func:`accuracy`.
    output : callable, optional
        ``output(model_output) -> tensor``, e.g. ``lambda out: out.logits``; default
        :func:`default_output`.
    test : iterable, optional
        A held-out loader for the final figures; the ``"test"`` split falls back to ``val``.
    unpack : callable, optional
        ``unpack(item) -> (inputs tuple, targets)`` for loaders whose items are not
        ``(inputs..., targets)`` or dicts with ``labels``.
    example : tuple of Tensor, optional
        Example positional inputs for tracing; default: the first rows of the first ``val``
        batch (dict batches need it given).
    finetune_epochs, lr, weight_decay : optional
        The fine-tuning recipe (Adam): default 1 epoch at 1e-4, no weight decay.
    name : str
        Shown in reports; default the loaders' dataset type.

    Calibration batches are the first ``n`` batches of ``train``, drawn with the global torch
    RNG seeded (so a shuffling ``DataLoader`` gives the same ones for the same seed).
    """

    train: Iterable[Any]
    val: Iterable[Any]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None
    output: Callable[[Any], torch.Tensor] | None = None
    test: Iterable[Any] | None = None
    unpack: Callable[[Any], tuple[Any, torch.Tensor]] | None = None
    example: tuple[torch.Tensor, ...] | None = None
    finetune_epochs: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("train", "val"):
            loader = getattr(self, key)
            if loader is None or isinstance(loader, (str, bytes, torch.Tensor)) or not isinstance(loader, Iterable):
                raise ConfigError(f"Workload {key} must be a DataLoader (or re-iterable of batches), "
                                  f"not {type(loader).__name__}")
        for key in ("loss_fn", "metric", "output", "unpack"):
            fn = getattr(self, key)
            if fn is not None and not callable(fn):
                raise ConfigError(f"Workload {key} must be callable, not {type(fn).__name__}")
        e = self.finetune_epochs
        if isinstance(e, bool) or not isinstance(e, int) or e < 0:
            raise ConfigError(f"Workload finetune_epochs must be a non-negative integer, not {e!r}")
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0):
            raise ConfigError(f"Workload lr must be positive, not {self.lr!r}")
        if not self.name:
            ds = getattr(self.train, "dataset", None)
            object.__setattr__(self, "name", type(ds).__name__ if ds is not None else "workload")

    # -- the recipe ---------------------------------------------------------------------------
    @property
    def epochs(self) -> int:
        """Epochs of :func:`hwprune.train.train` on this workload: the fine-tune budget."""
        return self.finetune_epochs

    @property
    def finetune_lr(self) -> float:
        return float(self.lr)

    # -- batches ------------------------------------------------------------------------------
    def _batches(self, loader: Iterable[Any], split: str) -> Iterator[Batch]:
        for item in loader:
            try:
                inputs, targets, kwargs = _unpack(item) if self.unpack is None else (
                    *self._user_unpack(item), None)
            except HwPruneError as exc:
                raise ConfigError(f"{self.name} {split} loader: {exc}") from None
            if not isinstance(targets, torch.Tensor):
                raise ConfigError(f"{self.name} {split} loader: targets must be a tensor, not "
                                  f"{type(targets).__name__}")
            yield Batch(tuple(inputs), targets, None, kwargs)

    def _user_unpack(self, item: Any) -> tuple[tuple[Any, ...], torch.Tensor]:
        try:
            inputs, targets = self.unpack(item)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - user code
            raise UserCodeError(f"unpack {import_path_of(self.unpack) or 'function'} raised "
                                f"{one_line(exc)}") from exc
        return (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), targets

    def train_batches(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        del generator  # a DataLoader shuffles with its own sampler (seeded by hwprune's seed)
        return self._batches(self.train, "train")

    def steps_per_epoch(self) -> int:
        try:
            return max(1, len(self.train))  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(f"{self.name}: the train loader has no len(); AGP needs the number of "
                              "steps per epoch (use a map-style dataset or another schedule)") from None

    def calibration_batches(self, n: int, *, seed: int = 0) -> Iterator[Batch]:
        with _seeded(self.train, seed):
            for i, batch in enumerate(self._batches(self.train, "train")):
                if i >= n:
                    return
                yield batch

    def eval_batches(self, split: str = "val") -> Iterator[Batch]:
        if split not in SPLITS:
            raise ConfigError(f"split must be train, val or test, not {split!r}")
        loader = {"train": self.train, "val": self.val, "test": self.test if self.test is not None
                  else self.val}[split]
        return self._batches(loader, split)

    # -- model and figures --------------------------------------------------------------------
    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        out = model(*batch.inputs, **dict(batch.kwargs or {}))
        if self.output is None:
            return default_output(out)
        try:
            y = self.output(out)
        except Exception as exc:  # noqa: BLE001 - user code
            label = import_path_of(self.output) or "(a lambda)"
            raise UserCodeError(f"output adapter {label} raised {one_line(exc)}") from exc
        if not isinstance(y, torch.Tensor):
            raise ConfigError(f"the output adapter returned a {type(y).__name__}, not a tensor")
        return y

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs, targets)

    def compute_metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return accuracy(outputs, targets) if self.metric is None else self.metric(outputs, targets)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        if self.example is not None:
            return tuple(t[:batch].clone() if t.dim() else t.clone() for t in self.example)
        first = next(iter(self.eval_batches("val")), None)
        if first is None:
            raise ConfigError(f"{self.name}: the val loader is empty")
        if first.kwargs:
            raise ConfigError(f"{self.name}: dict batches give keyword inputs; pass "
                              "Workload(..., example=(input_tensor,)) for tracing")
        return tuple(t[:batch].clone() for t in first.inputs)


@contextlib.contextmanager
def _seeded(loader: Any, seed: int) -> Iterator[None]:
    """Seed the global RNG and the loader's own generators (restoring all of them afterwards),
    so a shuffling DataLoader yields the same batches for the same seed."""
    gens = {id(g): g for g in (getattr(loader, "generator", None),
                               getattr(getattr(loader, "sampler", None), "generator", None))
            if isinstance(g, torch.Generator)}
    states = {k: g.get_state() for k, g in gens.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for g in gens.values():
            g.manual_seed(seed)
        try:
            yield
        finally:
            for k, g in gens.items():
                g.set_state(states[k])


# -- functions on any workload -----------------------------------------------------------------

def as_workload(data: Any, *, what: str = "data") -> WorkloadLike:
    """``data`` if it implements :class:`WorkloadLike`, else ConfigError naming its type."""
    if isinstance(data, WorkloadLike):
        return data
    if isinstance(data, str):
        from .tasks import load_task

        return load_task(data)
    raise ConfigError(f"{what} must be a built-in task (hwprune.tasks.load_task) or an "
                      f"hwprune.Workload, not {type(data).__name__}")


def workload_from(value: Any, *, source: str = "data", **overrides: Any) -> WorkloadLike:
    """A workload from what a user's ``make_loaders()`` returned.

    Accepted: a workload; ``(train, val)``, ``(train, val, loss_fn)`` or ``(train, val, loss_fn,
    metric)``; or a dict of :class:`Workload`'s keyword arguments (``train``, ``val``,
    ``loss_fn``/``loss``, ``metric``, ``output``, ``test`` …).  ``overrides`` (e.g. the CLI's
    ``finetune_epochs``) replace defaults.  Errors name ``source``.
    """
    if isinstance(value, WorkloadLike) and not overrides:
        return value
    if isinstance(value, Workload):
        kwargs = {k: getattr(value, k) for k in ("train", "val", "loss_fn", "metric", "output", "test",
                                                  "unpack", "example", "finetune_epochs", "lr",
                                                  "weight_decay", "name")}
    elif isinstance(value, Mapping):
        kwargs = dict(value)
        if "loss" in kwargs:
            kwargs["loss_fn"] = kwargs.pop("loss")
    elif isinstance(value, (tuple, list)) and 2 <= len(value) <= 4:
        kwargs = dict(zip(("train", "val", "loss_fn", "metric"), value))
        if kwargs.get("loss_fn") is None:
            kwargs.pop("loss_fn", None)
    else:
        raise ConfigError(f"{source} must return (train_loader, val_loader[, loss_fn[, metric]]), a "
                          f"dict of hwprune.Workload arguments or a Workload, not {type(value).__name__}")
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Workload(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: {one_line(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def evaluate(model: nn.Module, data: WorkloadLike, split: str = "test") -> float:
    """The workload's metric of ``model`` on ``split``, in eval mode, without gradients.

    Outputs and targets of every batch are concatenated (one row per example, small), then
    :meth:`~WorkloadLike.compute_metric` runs once.  Raises ConfigError if the metric is not a
    finite real number.
    """
    from .train import refresh_pruned

    was_training = model.training
    model.eval()
    refresh_pruned(model)
    outs, targets = [], []
    try:
        with torch.no_grad(), _mha_fastpath_off():
            for batch in data.eval_batches(split):
                outs.append(data.outputs(model, batch).detach())
                targets.append(batch.targets)
    finally:
        model.train(was_training)
    if not outs:
        return 0.0
    value = data.compute_metric(torch.cat(outs), torch.cat(targets))
    return _number(value, data)


def _number(value: Any, data: WorkloadLike) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"the metric of {data.name} returned {value!r}, not a finite number")
    return float(value)


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """Pruned attention weights live in ``*_orig``·mask: the fused MHA kernel must not run."""
    old = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(old)


def check_workload(model: nn.Module, data: WorkloadLike) -> None:
    """Run one validation and one training batch through ``model`` before anything expensive.

    Raises ConfigError (one line) if the model fails on a batch (wrong shapes, wrong dtype), the
    output has no row per target, the loss is not a finite scalar, or the metric is not a
    number.  The model is left unchanged.
    """
    from .train import refresh_pruned

    was_training = model.training
    model.eval()
    refresh_pruned(model)
    try:
        with torch.no_grad(), _mha_fastpath_off():
            for split, batches in (("val", data.eval_batches("val")), ("train", data.calibration_batches(1))):
                batch = next(iter(batches), None)
                if batch is None:
                    raise ConfigError(f"{data.name}: the {split} data is empty")
                try:
                    out = data.outputs(model, batch)
                except HwPruneError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the user's model on the user's data
                    shapes = ", ".join(str(tuple(t.shape)) for t in batch.inputs if isinstance(t, torch.Tensor))
                    raise ConfigError(f"{data.name}: the model fails on a {split} batch of input shape "
                                      f"{shapes or '?'} ({one_line(exc)})") from exc
                if out.shape[:1] != batch.targets.shape[:1]:
                    raise ConfigError(f"{data.name}: the model output has shape {tuple(out.shape)} for "
                                      f"{split} targets of shape {tuple(batch.targets.shape)}")
                try:
                    loss = data.compute_loss(out, batch.targets)
                    metric = data.compute_metric(out, batch.targets)
                except HwPruneError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise UserCodeError(f"{data.name}: the loss or metric raised {one_line(exc)}") from exc
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not torch.isfinite(loss).all():
                    raise ConfigError(f"{data.name}: the loss must be a finite scalar tensor, not {loss!r}")
                _number(metric, data)
    finally:
        model.train(was_training)
