"""A user's own model and data, as ``hwprune`` reaches them by import path (README: "Your own model").

``make_model()`` returns a trained ``torch.nn.Module`` (here trained in a second on scikit-learn's
digits; yours would load its weights), ``make_loaders()`` its ``DataLoader``\\ s::

    hwprune estimate examples.my_model:make_model --input-shape 1,1,8,8
    hwprune prune examples.my_model:make_model --data examples.my_model:make_loaders --pattern 2:4 --out my24.pt
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class MyNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(h.flatten(1))


def make_loaders() -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders of 8×8 digits, standardised."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x - x.mean()) / x.std(), dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    gen = torch.Generator().manual_seed(0)
    return (DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=32, shuffle=True, generator=gen),
            DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=256))


def make_model() -> nn.Module:
    """A trained MyNet (seeded: the same weights every call)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MyNet()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        train_loader, _ = make_loaders()
        for _ in range(2):
            for x, y in train_loader:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
    return model.eval()
