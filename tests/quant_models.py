"""Small trained models shared by the quantization, export and simulation tests (built once per worker)."""

from __future__ import annotations

import functools

from hwprune.prune import prune_model
from hwprune.tasks import load_task
from hwprune.train import clone_model, train_task


@functools.lru_cache(maxsize=1)
def digits():
    """(task, {"dense": model, "2:4": model, "1:4": model}, {"2:4": patterns, ...}): short runs."""
    task = load_task("digits_cnn")
    dense, _ = train_task(task, seed=0, epochs=4)
    models, patterns = {"dense": dense}, {"dense": {}}
    for pat in ("2:4", "1:4"):
        res = prune_model(clone_model(dense), task, pattern=pat, finetune_epochs=1)
        models[pat], patterns[pat] = res.model, dict(res.patterns)
    return task, models, patterns


@functools.lru_cache(maxsize=1)
def tiny_transformer():
    """(task, {"dense": model, "2:4": model}, {"2:4": patterns, ...}): the Transformer task's
    model trained with its recipe (about 6 s) and pruned 2:4 with a one-epoch fine-tune."""
    task = load_task("tiny_transformer")
    dense, _ = train_task(task, seed=0)
    res = prune_model(clone_model(dense), task, pattern="2:4", finetune_epochs=1)
    return task, {"dense": dense, "2:4": res.model}, {"dense": {}, "2:4": dict(res.patterns)}
