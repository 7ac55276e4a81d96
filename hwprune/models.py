"""Small trainable models of the built-in tasks (digits, synthetic sequences, synthetic graphs).

Each model has ``example_input(batch)`` returning the positional inputs of ``forward``, so the
torch importer and ONNX export can trace it without a data set.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "LeNet300100", "TinyTransformer", "GCN", "normalized_adjacency"]


class DigitsCNN(nn.Module):
    """A small CNN for 8×8 digits (sklearn ``load_digits``): two 3×3 convs, max-pool, two FCs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    @staticmethod
    def example_input(batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch, 1, 8, 8),)


class LeNet300100(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2015), here on 8×8 = 64-pixel digits."""

    def __init__(self, in_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    @staticmethod
    def example_input(batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch, 1, 8, 8),)


class TinyTransformer(nn.Module):
    """A 2-layer Transformer encoder classifier over token sequences (mean-pooled)."""

    def __init__(self, vocab: int = 10, seq_len: int = 16, d_model: int = 64, nhead: int = 4,
                 dim_ff: int = 128, layers: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(tokens) + self.pos)
        return self.head(h.mean(dim=1))

    def example_input(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch, self.seq_len, dtype=torch.long),)


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Â = D^-½ (A + I) D^-½ (Kipf & Welling 2017)."""
    a = adj + torch.eye(adj.shape[0], dtype=adj.dtype)
    d = a.sum(dim=1).rsqrt()
    return d[:, None] * a * d[None, :]


class GCN(nn.Module):
    """Two-layer graph convolutional network: softmax(Â · relu(Â X W₁) · W₂).

    The aggregation Â·H is an activation × activation product (no weights to prune); X·W is a
    linear layer over all nodes.
    """

    def __init__(self, in_features: int = 32, hidden: int = 64, num_classes: int = 4,
                 nodes: int = 256) -> None:
        super().__init__()
        self.nodes, self.in_features = nodes, in_features
        self.lin1 = nn.Linear(in_features, hidden)
        self.lin2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, adj_norm: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.matmul(adj_norm, self.lin1(x)))
        return torch.matmul(adj_norm, self.lin2(h))

    def example_input(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        del batch  # a graph is one sample
        return (torch.zeros(self.nodes, self.in_features), torch.eye(self.nodes))
