"""Built-in tasks: small data sets made on this machine (no downloads) and the models they train.

* ``digits_cnn`` — :class:`~hwprune.models.DigitsCNN` on scikit-learn's ``load_digits``.
* ``lenet300100`` — LeNet-300-100 on the same digits.
* ``tiny_transformer`` — :class:`~hwprune.models.TinyTransformer` on synthetic sequences: *which
  of 10 tokens occurs most often in a sequence of 16?*, with 8 % of labels flipped (fp32 ≈ 90 %).
* ``gcn`` — a two-layer GCN on a stochastic block model graph whose node labels are the
  communities and whose features are very noisy community centroids (σ = 5; fp32 ≈ 90 %).

Former names: ``mlp`` (now ``lenet300100``) and ``transformer`` (now ``tiny_transformer``, whose
old rule — *is token 3 more frequent than token 5?*, saturated at 100 % — remains as
:func:`make_count_sequences`) still load.  Every task takes its model's zoo name.

Every split is fixed by the task's ``data_seed`` (not the training seed), so accuracies of
different runs are measured on the same examples.  Digits inputs are standardised with the
training split's per-pixel mean and standard deviation and shaped 1×8×8.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError
from .models import GCN, DigitsCNN, LeNet300100, TinyTransformer, normalized_adjacency
from .workload import Batch, accuracy

__all__ = ["Task", "Split", "Batch", "TASKS", "ARCHS", "load_task", "task_names", "build_arch",
           "register_task", "make_digits", "make_count_sequences", "make_sbm_graph", "make_majority_sequences",
           "RENAMED"]

#: model constructors by architecture name (what a checkpoint records)
ARCHS: dict[str, Callable[..., nn.Module]] = {
    "DigitsCNN": DigitsCNN,
    "LeNet300100": LeNet300100,
    "TinyTransformer": TinyTransformer,
    "GCN": GCN,
}


def build_arch(arch: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered architecture, or a user's factory given by import path
    (``package.module:function``, see :mod:`hwprune.usermodel`); ConfigError names an unknown one."""
    from .userland import is_import_path

    if is_import_path(arch):
        from .usermodel import build_model

        return build_model(arch, kwargs)[0]
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))} or a "
                          "factory's import path 'package.module:function'")
    try:
        return ARCHS[arch](**dict(kwargs or {}))
    except TypeError as exc:
        raise ConfigError(f"bad arguments for architecture {arch!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Split:
    """One split: ``inputs[i]`` are batched along dim 0, unless ``index`` is set (a graph: the
    inputs are the whole graph and ``index`` lists the nodes of this split)."""

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0]) if self.index is None else int(self.index.shape[0])


@dataclass(frozen=True, slots=True)
class Task:
    """A built-in task: data splits, the model architecture and its training recipe.

    Create with :func:`load_task`.  A task is a :class:`hwprune.workload.WorkloadLike`: its
    splits are tensors in memory, its loss cross-entropy and its metric top-1 accuracy;
    fine-tuning defaults to a quarter of the training epochs at ``lr · finetune_lr_scale``.
    """

    name: str
    description: str
    arch: str
    arch_kwargs: Mapping[str, Any]
    train: Split
    val: Split
    test: Split
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    finetune_lr_scale: float = 1.0  # fine-tune at the training LR: recovers best in the benchmark
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def make_model(self, seed: int = 0) -> nn.Module:
        """A freshly initialised model (initialisation seeded by ``seed``)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_arch(self.arch, self.arch_kwargs)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, not {name!r}")
        return getattr(self, name)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Real inputs of the test split (``batch`` examples; a graph task returns the graph)."""
        s = self.test
        if s.index is not None:
            return tuple(t.clone() for t in s.inputs)
        return tuple(t[:batch].clone() for t in s.inputs)

    # -- the workload protocol (hwprune.workload.WorkloadLike) ---------------------------------
    @property
    def finetune_epochs(self) -> int:
        return max(1, self.epochs // 4)

    @property
    def finetune_lr(self) -> float:
        return self.lr * self.finetune_lr_scale

    def train_batches(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        return self.batches("train", shuffle=True, generator=generator)

    def steps_per_epoch(self) -> int:
        return 1 if self.train.index is not None else -(-len(self.train) // self.batch_size)

    def calibration_batches(self, n: int, *, seed: int = 0, batch_size: int = 64) -> Iterator[Batch]:
        return self.batches("train", batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed), limit=n)

    def eval_batches(self, split: str = "val") -> Iterator[Batch]:
        return self.batches(split, batch_size=512)

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        out = model(*batch.inputs)
        return out if batch.index is None else out[batch.index]

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def compute_metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return accuracy(outputs, targets)

    def batches(self, split: str, *, batch_size: int | None = None, shuffle: bool = False,
                generator: torch.Generator | None = None, limit: int | None = None) -> Iterator[Batch]:
        """Iterate a split in batches (a graph split is one full batch)."""
        s = self.split(split)
        if s.index is not None:
            yield Batch(s.inputs, s.targets[s.index], s.index)
            return
        n = len(s)
        bs = batch_size or self.batch_size
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i, start in enumerate(range(0, n, bs)):
            if limit is not None and i >= limit:
                return
            idx = order[start:start + bs]
            yield Batch(tuple(t[idx] for t in s.inputs), s.targets[idx], None)


# -- data --------------------------------------------------------------------------------------

def _split_indices(n: int, seed: int, fractions: tuple[float, float]) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return order[:a], order[a:b], order[b:]


def make_digits(seed: int = 0) -> tuple[Split, Split, Split]:
    """load_digits split 60/20/20 (seeded), standardised per pixel on the train split, 1×8×8."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    tr, va, te = _split_indices(len(y), seed, (0.6, 0.2))
    mean = x[tr].mean(axis=0)
    std = x[tr].std(axis=0)
    std[std < 1e-6] = 1.0
    x = (x - mean) / std

    def split(idx: np.ndarray) -> Split:
        return Split((torch.from_numpy(x[idx].reshape(-1, 1, 8, 8).copy()),), torch.from_numpy(y[idx]))

    return split(tr), split(va), split(te)


def make_count_sequences(n: int, *, vocab: int = 16, seq_len: int = 16, seed: int = 0,
                         a: int = 3, b: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences labelled 1 when token ``a`` occurs more often than token ``b``."""
    if not (0 <= a < vocab and 0 <= b < vocab and a != b):
        raise ConfigError(f"tokens a={a!r}, b={b!r} must be distinct and below vocab={vocab}")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, seq_len), generator=g)
    # enrich both tokens so counts are informative (otherwise most sequences hold 0 or 1 of each)
    extra = torch.randint(0, 3, (n, seq_len), generator=g)
    tokens = torch.where(extra == 0, torch.full_like(tokens, a), tokens)
    tokens = torch.where(extra == 1, torch.full_like(tokens, b), tokens)
    labels = ((tokens == a).sum(1) > (tokens == b).sum(1)).long()
    return tokens, labels


def make_majority_sequences(n: int, *, classes: int = 10, seq_len: int = 16, flip: float = 0.08,
                            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences labelled with their most frequent token, a fraction ``flip`` of labels noisy.

    Tokens are uniform over ``classes`` values; only sequences with a unique most frequent token
    are kept, so the clean rule is well defined and needs every position (attention across the
    whole sequence).  A seeded ``flip`` fraction of labels is replaced by another class chosen
    uniformly, so the best possible accuracy is ``1 − flip`` and no method saturates the task.
    """
    if classes < 2 or seq_len < 2 or not 0.0 <= flip < 1.0:
        raise ConfigError(f"majority sequences need classes ≥ 2, seq_len ≥ 2 and flip in [0, 1), not "
                          f"{classes!r}, {seq_len!r}, {flip!r}")
    g = torch.Generator().manual_seed(seed)
    xs, ys, have = [], [], 0
    while have < n:
        tokens = torch.randint(0, classes, (2 * n, seq_len), generator=g)
        counts = torch.nn.functional.one_hot(tokens, classes).sum(1)
        top2 = counts.topk(2, dim=1).values
        unique = top2[:, 0] > top2[:, 1]
        xs.append(tokens[unique])
        ys.append(counts[unique].argmax(1))
        have += int(unique.sum())
    x, y = torch.cat(xs)[:n], torch.cat(ys)[:n]
    noisy = torch.rand(n, generator=g) < flip
    shift = torch.randint(1, classes, (n,), generator=g)
    return x, torch.where(noisy, (y + shift) % classes, y)


def make_sbm_graph(*, nodes: int = 256, communities: int = 4, features: int = 32, p_in: float = 0.08,
                   p_out: float = 0.01, noise: float = 2.0, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stochastic block model graph: (features, normalised adjacency, community labels)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(nodes) % communities
    rng.shuffle(labels)
    same = labels[:, None] == labels[None, :]
    prob = np.where(same, p_in, p_out)
    upper = np.triu(rng.random((nodes, nodes)) < prob, 1)
    adj = (upper | upper.T).astype(np.float32)
    centroids = rng.normal(size=(communities, features)).astype(np.float32)
    x = centroids[labels] + noise * rng.normal(size=(nodes, features)).astype(np.float32)
    return (torch.from_numpy(x), normalized_adjacency(torch.from_numpy(adj)),
            torch.from_numpy(labels.astype(np.int64)))


# -- the registry ------------------------------------------------------------------------------

def _digits_task(name: str, description: str, arch: str, kwargs: dict[str, Any], *, epochs: int,
                 lr: float, seed: int) -> Task:
    tr, va, te = make_digits(seed)
    return Task(name, description, arch, MappingProxyType(kwargs), tr, va, te, epochs=epochs, lr=lr,
                batch_size=32, weight_decay=1e-4)


def _digits_cnn(seed: int) -> Task:
    return _digits_task("digits_cnn", "DigitsCNN on sklearn digits (8×8, 10 classes)", "DigitsCNN",
                        {}, epochs=20, lr=2e-3, seed=seed)


def _lenet300100(seed: int) -> Task:
    return _digits_task("lenet300100", "LeNet-300-100 on sklearn digits (64 pixels, 10 classes)", "LeNet300100",
                        {}, epochs=20, lr=1e-3, seed=seed)


def _tiny_transformer(seed: int) -> Task:
    kwargs = {"vocab": 10, "seq_len": 16, "d_model": 64, "nhead": 4, "dim_ff": 128, "layers": 2,
              "num_classes": 10}
    x, y = make_majority_sequences(6000, classes=10, seq_len=16, seed=seed)
    tr, va, te = (slice(0, 4000), slice(4000, 5000), slice(5000, 6000))
    return Task("tiny_transformer", "TinyTransformer: the most frequent of 10 tokens in a sequence of 16, "
                "8 % of labels flipped (synthetic)", "TinyTransformer", MappingProxyType(kwargs),
                Split((x[tr],), y[tr]), Split((x[va],), y[va]), Split((x[te],), y[te]),
                epochs=6, lr=2e-3, batch_size=64)


def _gcn(seed: int) -> Task:
    nodes, feats, classes = 256, 32, 4
    # noisy features (σ = 5 around the community centroids): the graph must be used, and the
    # task is not saturated (fp32 ≈ 90 %), so pruning methods can be told apart
    x, adj, y = make_sbm_graph(nodes=nodes, communities=classes, features=feats, noise=5.0, seed=seed)
    tr, va, te = (torch.from_numpy(i) for i in _split_indices(nodes, seed + 1, (0.4, 0.2)))
    kwargs = {"in_features": feats, "hidden": 64, "num_classes": classes, "nodes": nodes}
    inputs = (x, adj)
    return Task("gcn", "2-layer GCN on a 4-community stochastic block model graph (node labels)",
                "GCN", MappingProxyType(kwargs), Split(inputs, y, tr), Split(inputs, y, va),
                Split(inputs, y, te), epochs=150, lr=1e-2, batch_size=nodes, weight_decay=5e-4)


#: task builders by name: ``builder(data_seed) -> Task``
TASKS: dict[str, Callable[[int], Task]] = {}


def register_task(name: str, builder: Callable[[int], Task]) -> None:
    """Add a task builder; a duplicate name is rejected."""
    if name in TASKS:
        raise ConfigError(f"task {name!r} is already registered")
    TASKS[name] = builder


for _name, _builder in (("digits_cnn", _digits_cnn), ("lenet300100", _lenet300100),
                        ("tiny_transformer", _tiny_transformer), ("gcn", _gcn)):
    register_task(_name, _builder)

#: former task names (before tasks took their zoo model's name), still accepted by load_task
RENAMED = MappingProxyType({"mlp": "lenet300100", "transformer": "tiny_transformer"})


def task_names() -> list[str]:
    return sorted(TASKS)


def load_task(name: str, *, data_seed: int = 0) -> Task:
    """Build a registered task's data (deterministic for a given ``data_seed``).

    Raises
    ------
    ConfigError
        For an unknown task name (the message lists the known ones).
    """
    name = RENAMED.get(name, name) if isinstance(name, str) else name
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; built-in tasks: {', '.join(task_names())}")
    return TASKS[name](data_seed)
