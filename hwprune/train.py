"""Seeded, deterministic fp32 training and evaluation on CPU, for any workload.

``train`` and ``evaluate`` take a built-in :class:`~hwprune.tasks.Task` or a user's
:class:`~hwprune.workload.Workload` alike (the :class:`~hwprune.workload.WorkloadLike` protocol).

Determinism: :func:`deterministic` seeds torch, turns on ``torch.use_deterministic_algorithms``
and fixes the intra-op thread count for the duration of a call, then restores all three, so
two runs with the same seed give bit-identical weights on the same machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import ConfigError
from .workload import Batch, WorkloadLike, as_workload
from .workload import evaluate as _evaluate

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["deterministic", "train", "evaluate", "train_task", "TrainHistory", "forward_batch",
           "refresh_pruned", "clone_model", "steps_per_epoch"]

DEFAULT_THREADS = 1  # tiny models: a second thread only adds sync cost (10× slower under load)


@contextlib.contextmanager
def deterministic(seed: int, threads: int = DEFAULT_THREADS) -> Iterator[torch.Generator]:
    """Seed torch, force deterministic kernels and a fixed thread count; restore on exit.

    Yields a :class:`torch.Generator` seeded with ``seed`` for data shuffling.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, not {seed!r}")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
            torch.set_num_threads(old_threads)


def refresh_pruned(model: nn.Module, *, grad: bool = False) -> nn.Module:
    """Recompute every ``torch.nn.utils.prune`` reparametrised tensor from ``*_orig * *_mask``.

    Modules whose pruned weight is read by a parent rather than by their own ``forward``
    (``MultiheadAttention.out_proj``, the Transformer fast path) would otherwise see a stale
    tensor after an optimizer step.  With ``grad=False`` the tensors are graph leaves, so the
    model can be deep-copied (``copy.deepcopy`` refuses non-leaf tensors).
    """
    from torch.nn.utils import prune

    with torch.set_grad_enabled(grad):
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod) and hasattr(module, hook._tensor_name + "_orig"):
                    setattr(module, hook._tensor_name, hook.apply_mask(module))
    return model


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy that also works for pruned models (masks and ``*_orig`` included)."""
    import copy

    return copy.deepcopy(refresh_pruned(model))


def forward_batch(model: nn.Module, batch: Batch, data: WorkloadLike | None = None) -> torch.Tensor:
    """Scored outputs of a batch: ``data.outputs(model, batch)``; without ``data``, the raw
    output with the batch's ``index`` rows selected (graph tasks: the split's nodes)."""
    if data is not None:
        return data.outputs(model, batch)
    out = model(*batch.inputs, **dict(batch.kwargs or {}))
    return out if batch.index is None else out[batch.index]


@dataclass(slots=True)
class TrainHistory:
    """Per-epoch mean training loss and validation accuracy."""

    loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    steps: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"loss": list(self.loss), "val_accuracy": list(self.val_accuracy), "steps": self.steps}


def evaluate(model: nn.Module, data: WorkloadLike, split: str = "test", *, batch_size: int | None = None) -> float:
    """The workload's metric (top-1 accuracy for tasks) of ``model`` on a split, in eval mode.

    See :func:`hwprune.workload.evaluate`; ``batch_size`` is accepted for compatibility and
    ignored (each workload batches its own evaluation).
    """
    del batch_size
    return _evaluate(model, as_workload(data), split)


def steps_per_epoch(data: WorkloadLike) -> int:
    """Optimizer steps of one training epoch."""
    return data.steps_per_epoch()


def train(model: nn.Module, data: WorkloadLike, *, epochs: int | None = None, lr: float | None = None,
          seed: int = 0, progress: bool = False, description: str = "train",
          on_step: Callable[[int], None] | None = None, threads: int = DEFAULT_THREADS,
          steps: int | None = None) -> TrainHistory:
    """Train ``model`` in place on ``data`` (Adam on the workload's loss, fp32), deterministically.

    Parameters
    ----------
    model : nn.Module
        Trained in place.  ``torch.nn.utils.prune`` masks are respected: the optimizer updates
        ``weight_orig`` and the forward pass multiplies by ``weight_mask``, so pruned weights
        stay exactly zero.
    data : WorkloadLike
        A built-in task or a :class:`~hwprune.workload.Workload`: batches, loss and the default
        recipe (``data.epochs``, ``data.lr``, ``data.weight_decay``).
    epochs, lr : optional
        Override the task's recipe.
    seed : int
        Seeds shuffling and any randomness in the model.
    progress : bool
        Show a rich progress bar (off by default: library calls are silent).
    on_step : callable, optional
        Called with the global step index before every optimizer step (AGP prunes here).
    steps : int, optional
        Train for exactly this many optimizer steps instead of ``epochs`` whole epochs (the
        last epoch is cut short); the fine-tune budget of a pruning round.
    """
    data = as_workload(data)
    epochs = getattr(data, "epochs", data.finetune_epochs) if epochs is None else epochs
    lr = getattr(data, "lr", data.finetune_lr) if lr is None else lr
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, not {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"learning rate must be positive, not {lr!r}")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"training steps must be a non-negative integer, not {steps!r}")
        epochs = -(-steps // data.steps_per_epoch())
    history = TrainHistory()
    if epochs == 0:
        return history
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=data.weight_decay)
    total_steps = epochs * data.steps_per_epoch() if steps is None else steps
    with deterministic(seed, threads) as gen, _progress(progress, description, total_steps) as advance:
        model.train()
        step = 0
        for _ in range(epochs):
            losses = []
            for batch in data.train_batches(gen):
                if step == total_steps:
                    break
                if on_step is not None:
                    on_step(step)
                opt.zero_grad(set_to_none=True)
                refresh_pruned(model, grad=True)
                loss = data.compute_loss(data.outputs(model, batch), batch.targets)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                advance()
            history.loss.append(sum(losses) / max(1, len(losses)))
            history.val_accuracy.append(_evaluate(model, data, "val"))
            model.train()
        history.steps = step
    refresh_pruned(model)
    model.eval()
    return history


def train_task(task: Task, *, seed: int = 0, epochs: int | None = None, progress: bool = False
               ) -> tuple[nn.Module, TrainHistory]:
    """A fresh model of ``task`` trained with its recipe: ``(model, history)``."""
    model = task.make_model(seed)
    history = train(model, task, epochs=epochs, seed=seed, progress=progress,
                    description=f"train {task.name}")
    return model, history


@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # on stderr, so ``--json`` output on stdout stays machine-readable
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
        tid = bar.add_task(description, total=total)
        yield lambda: bar.advance(tid)
