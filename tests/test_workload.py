"""The workload interface (built-in tasks and user DataLoaders alike) and user code by import path."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hwprune
from hwprune.errors import ConfigError, UserCodeError
from hwprune.patterns import NM
from hwprune.tasks import load_task
from hwprune.train import evaluate, train
from hwprune.userland import call, import_path_of, is_import_path, resolve
from hwprune.workload import Workload, WorkloadLike, as_workload, check_workload, workload_from


def digits_loaders(batch_size: int = 64):
    task = load_task("digits_cnn")
    train_ds = TensorDataset(task.train.inputs[0], task.train.targets)
    val_ds = TensorDataset(task.val.inputs[0], task.val.targets)
    gen = torch.Generator().manual_seed(0)
    return (DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=gen),
            DataLoader(val_ds, batch_size=256))


class Wrapped(nn.Module):
    """Returns a ModelOutput-like object, as a transformers model does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return types.SimpleNamespace(logits=self.net(x), hidden=None)


def test_tasks_and_user_workloads_share_one_protocol():
    task = load_task("lenet300100")
    tr, va = digits_loaders()
    work = hwprune.Workload(tr, va, nn.functional.cross_entropy)
    for data in (task, work):
        assert isinstance(data, WorkloadLike)
        batch = next(iter(data.calibration_batches(1, seed=3)))
        assert batch.inputs[0].shape[1:] == (1, 8, 8) and batch.targets.dtype == torch.int64
    assert as_workload("lenet300100").name == "lenet300100"
    assert as_workload("mlp").name == "lenet300100"  # the former name still loads
    with pytest.raises(ConfigError, match="not int"):
        as_workload(3)
    # the same seed gives the same calibration batches from a shuffling DataLoader
    a = next(iter(work.calibration_batches(1, seed=5))).targets
    b = next(iter(work.calibration_batches(1, seed=5))).targets
    c = next(iter(work.calibration_batches(1, seed=6))).targets
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert work.example_inputs(2)[0].shape == (2, 1, 8, 8)
    assert work.steps_per_epoch() == len(tr)


def test_prune_a_user_model_with_its_own_loaders_and_model_output():
    tr, va = digits_loaders()
    torch.manual_seed(0)
    model = Wrapped()
    data = hwprune.Workload(tr, va, nn.functional.cross_entropy, output=lambda out: out.logits,
                            finetune_epochs=1, lr=1e-3)
    train(model, data, epochs=5, lr=5e-3)
    before = evaluate(model, data, "val")
    assert before > 0.8
    result = hwprune.prune_model(model, "2:4", data=data, criterion="taylor")
    assert set(result.masks) == {"net.1", "net.3"}
    for m in result.masks.values():
        assert (m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all()
    after = evaluate(model, data, "val")
    assert after > before - 0.1
    # the default adapter finds .logits on its own; pruning without fine-tuning changes nothing else
    plain = hwprune.Workload(tr, va)
    r2 = hwprune.prune_model(Wrapped(), NM(1, 4), data=plain, finetune_epochs=0)
    assert all(float(m.mean()) == 0.25 for m in r2.masks.values())


def test_custom_metric_and_dict_batches():
    x = torch.randn(40, 6)
    y = (x[:, 0] > 0).long()
    items = [{"x": x[i:i + 8], "labels": y[i:i + 8]} for i in range(0, 40, 8)]

    class KwModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, *, x):
            return self.fc(x)

    model = KwModel()
    data = Workload(items, items, metric=lambda out, t: -float(nn.functional.cross_entropy(out, t)),
                    example=(x[:1],))
    value = evaluate(model, data, "val")
    assert value < 0  # the metric is the user's, not accuracy
    check_workload(model, data)
    with pytest.raises(ConfigError, match="keyword inputs"):
        Workload(items, items).example_inputs()


@pytest.mark.parametrize("make, needle", [
    (lambda tr, va: Workload(tr, va, metric=lambda o, t: "good"), "'good', not a finite number"),
    (lambda tr, va: Workload([(torch.zeros(4, 3, 5), torch.zeros(4, dtype=torch.long))], va),
     "input shape (4, 3, 5)"),
    (lambda tr, va: Workload(tr, [torch.zeros(3)]), "not a Tensor"),
    (lambda tr, va: Workload(tr, va, loss_fn=lambda o, t: 1 / 0), "ZeroDivisionError"),
    (lambda tr, va: Workload(tr, va, output=lambda out: out["logits"]), "output adapter"),
])
def test_bad_user_workloads_fail_early_in_one_line(make, needle):
    tr, va = digits_loaders()
    torch.manual_seed(0)
    model = Wrapped() if "adapter" in needle else nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ConfigError) as info:
        hwprune.prune_model(model, "2:4", data=make(tr, va))
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # refused before pruning


def test_workload_from_what_make_loaders_returns():
    tr, va = digits_loaders()
    assert isinstance(workload_from((tr, va)), Workload)
    w = workload_from((tr, va, nn.functional.nll_loss), finetune_epochs=3)
    assert w.loss_fn is nn.functional.nll_loss and w.finetune_epochs == 3
    w = workload_from({"train": tr, "val": va, "loss": nn.functional.mse_loss})
    assert w.loss_fn is nn.functional.mse_loss
    for bad, needle in [(tr, "must return"), ((tr,), "must return"), ({"train": tr}, "val"),
                        ({"train": tr, "val": va, "bogus": 1}, "bogus"), ((tr, 5), "val must be")]:
        with pytest.raises(ConfigError, match=needle):
            workload_from(bad, source="mod:make")


def test_import_paths_resolve_or_say_why_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "usermod_wl.py").write_text(
        "import torch\n"
        "def make(width=3):\n    return torch.nn.Linear(2, width)\n"
        "def broken():\n    raise ValueError('bad width\\nsecond line')\n"
        "class K:\n    @staticmethod\n    def build():\n        return 7\n")
    (tmp_path / "usermod_bad.py").write_text("import no_such_package_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert is_import_path("usermod_wl:make") and not is_import_path("model.pt")
    assert not is_import_path("a:b:c") and not is_import_path("a-b:c")
    assert call("usermod_wl:make", width=5, what="model factory").out_features == 5  # found via cwd
    assert resolve("usermod_wl:K.build")() == 7
    assert import_path_of(resolve("usermod_wl:make")) == "usermod_wl:make"
    assert import_path_of(lambda: 0) is None
    cases = [("usermod_wl:broken", "'usermod_wl:broken' raised ValueError: bad width"),
             ("usermod_wl:nothing", "has no attribute 'nothing'"),
             ("usermod_bad:f", "cannot import module 'usermod_bad' (ModuleNotFoundError"),
             ("no_pkg_here.mod:f", "cannot import module 'no_pkg_here.mod'"),
             ("not a path", "must be an import path"),
             ("usermod_wl:K", None)]
    for path, needle in cases:
        if needle is None:
            continue
        with pytest.raises(UserCodeError) as info:
            call(path, what="model factory")
        msg = str(info.value)
        assert needle in msg and "\n" not in msg, msg
    with pytest.raises(UserCodeError, match="not callable"):
        call("usermod_wl:K.build.__name__", what="x")


def test_old_and_new_prune_model_forms_agree():
    task = load_task("lenet300100")
    m1 = task.make_model(0)
    m2 = task.make_model(0)
    r1 = hwprune.prune_model(m1, task, pattern="2:4", finetune_epochs=0)
    r2 = hwprune.prune_model(m2, "2:4", data="lenet300100", finetune_epochs=0)
    assert all(np.array_equal(r1.masks[k], r2.masks[k]) for k in r1.masks)
    with pytest.raises(ConfigError, match="needs data"):
        hwprune.prune_model(m1, "2:4")
    with pytest.raises(ConfigError, match="pattern once"):
        hwprune.prune_model(m1, "2:4", data=task, pattern="1:4")
