"""Seeded, deterministic fp32 training and evaluation on CPU for the built-in tasks.

Determinism: :func:`deterministic` seeds torch, turns on ``torch.use_deterministic_algorithms``
and fixes the intra-op thread count for the duration of a call, then restores all three, so
two runs with the same seed give bit-identical weights on the same machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError
from .tasks import Batch, Task

__all__ = ["deterministic", "train", "evaluate", "train_task", "TrainHistory", "forward_batch",
           "refresh_pruned", "clone_model"]

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


def forward_batch(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits of the scored examples of a batch (graph tasks: the split's nodes)."""
    out = model(*batch.inputs)
    return out if batch.index is None else out[batch.index]


@dataclass(slots=True)
class TrainHistory:
    """Per-epoch mean training loss and validation accuracy."""

    loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    steps: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"loss": list(self.loss), "val_accuracy": list(self.val_accuracy), "steps": self.steps}


def evaluate(model: nn.Module, task: Task, split: str = "test", *, batch_size: int = 512) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on a split, in eval mode, no gradients."""
    was_training = model.training
    model.eval()
    refresh_pruned(model)
    correct = total = 0
    with torch.no_grad():
        for batch in task.batches(split, batch_size=batch_size):
            pred = forward_batch(model, batch).argmax(dim=-1)
            correct += int((pred == batch.targets).sum())
            total += int(batch.targets.numel())
    model.train(was_training)
    return correct / total if total else 0.0


def steps_per_epoch(task: Task) -> int:
    n = len(task.train)
    return 1 if task.train.index is not None else -(-n // task.batch_size)


def train(model: nn.Module, task: Task, *, epochs: int | None = None, lr: float | None = None,
          seed: int = 0, progress: bool = False, description: str = "train",
          on_step: Callable[[int], None] | None = None, threads: int = DEFAULT_THREADS) -> TrainHistory:
    """Train ``model`` in place on ``task`` (Adam, cross-entropy, fp32), deterministically.

    Parameters
    ----------
    model : nn.Module
        Trained in place.  ``torch.nn.utils.prune`` masks are respected: the optimizer updates
        ``weight_orig`` and the forward pass multiplies by ``weight_mask``, so pruned weights
        stay exactly zero.
    task : Task
        Data and default recipe (``task.epochs``, ``task.lr``).
    epochs, lr : optional
        Override the task's recipe.
    seed : int
        Seeds shuffling and any randomness in the model.
    progress : bool
        Show a rich progress bar (off by default: library calls are silent).
    on_step : callable, optional
        Called with the global step index before every optimizer step (AGP prunes here).
    """
    epochs = task.epochs if epochs is None else epochs
    lr = task.lr if lr is None else lr
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, not {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"learning rate must be positive, not {lr!r}")
    history = TrainHistory()
    if epochs == 0:
        return history
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=task.weight_decay)
    total_steps = epochs * steps_per_epoch(task)
    with deterministic(seed, threads) as gen, _progress(progress, description, total_steps) as advance:
        model.train()
        step = 0
        for _ in range(epochs):
            losses = []
            for batch in task.batches("train", shuffle=True, generator=gen):
                if on_step is not None:
                    on_step(step)
                opt.zero_grad(set_to_none=True)
                refresh_pruned(model, grad=True)
                loss = F.cross_entropy(forward_batch(model, batch), batch.targets)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                advance()
            history.loss.append(sum(losses) / max(1, len(losses)))
            history.val_accuracy.append(evaluate(model, task, "val"))
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
