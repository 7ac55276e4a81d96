"""Checkpoints: weights_only round trips (masked and physically shrunk), refusal of bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.errors import ConfigError, ExportError
from hwprune.patterns import NM, Channel
from hwprune.prune import prune_model, shrink_channels
from hwprune.tasks import load_task
from hwprune.train import evaluate, train


@pytest.fixture(scope="module")
def pruned():
    task = load_task("digits_cnn")
    model = task.make_model(0)
    train(model, task, epochs=1)
    res = prune_model(model, task, pattern={"conv2": "channel:0.5", "fc1": "2:4"}, finetune_epochs=1)
    return task, res


def test_masked_round_trip(tmp_path, pruned):
    task, res = pruned
    path = save_checkpoint(tmp_path / "m.pt", res.model, arch="DigitsCNN", task="digits_cnn",
                           patterns=res.patterns, masks=res.masks, metrics={"acc": np.float32(0.5), "l": [1, 2]})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "hwprune-checkpoint" and raw["task"] == "digits_cnn"
    ck = load_checkpoint(path)
    assert ck.arch == "DigitsCNN" and ck.patterns == {"conv2": Channel(0.5), "fc1": NM(2, 4)}
    assert ck.metrics == {"acc": 0.5, "l": [1, 2]} and not ck.shrunk
    assert prune.is_pruned(ck.model) and hasattr(ck.model.fc1, "weight_orig")
    for name, m in res.masks.items():
        assert np.array_equal(ck.masks[name], m)
    x = task.example_inputs(8)[0]
    res.model.eval()
    assert torch.equal(ck.model(x), res.model(x))
    # removed channels stay removed through further training: bias and batch-norm are masked too
    assert prune.is_pruned(ck.model.bn2) and hasattr(ck.model.conv2, "bias_mask")
    assert isinstance(ck.example_inputs, tuple) and ck.example_inputs[0].shape == (1, 1, 8, 8)
    with pytest.raises(ExportError, match="exists"):
        save_checkpoint(path, res.model, arch="DigitsCNN", task="digits_cnn", patterns={}, masks=None, metrics=None)
    save_checkpoint(path, res.model, arch="DigitsCNN", task="digits_cnn", patterns={}, masks=None, metrics=None,
                    force=True)


def test_shrunk_round_trip(tmp_path, pruned):
    task, res = pruned
    small = shrink_channels(res.model, task.example_inputs(2))
    path = save_checkpoint(tmp_path / "s.pt", small, arch="DigitsCNN", task=task, patterns={"fc1": "2:4"},
                           masks=None, metrics={})
    ck = load_checkpoint(path)
    assert ck.shrunk and ck.model.conv2.out_channels == 16 and ck.model.bn2.num_features == 16
    assert ck.model.fc1.weight.shape == (64, 256) and ck.masks["fc1"].shape == (64, 256)
    x = task.example_inputs(8)[0]
    assert torch.allclose(ck.model(x), small.eval()(x), atol=1e-6)
    assert evaluate(ck.model, task) == evaluate(small, task)


def test_bad_files_raise_export_error_naming_the_path(tmp_path, pruned):
    task, res = pruned
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip")
    with pytest.raises(ExportError, match="garbage.pt"):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ExportError, match="other.pt: not an hwprune checkpoint"):
        load_checkpoint(other)
    good = save_checkpoint(tmp_path / "g.pt", res.model, arch="DigitsCNN", task="digits_cnn",
                           patterns={}, masks=None, metrics={})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ExportError, match="truncated.pt"):
        load_checkpoint(truncated)
    data = torch.load(good, weights_only=True)
    data["masks"]["fc1"] = torch.ones(3, 3, dtype=torch.bool)
    torch.save(data, tmp_path / "badmask.pt")
    with pytest.raises(ExportError, match="badmask.pt: corrupted"):
        load_checkpoint(tmp_path / "badmask.pt")
    with pytest.raises(ExportError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="plain"):
        save_checkpoint(tmp_path / "x.pt", res.model, arch="DigitsCNN", task="digits_cnn", patterns={},
                        masks=None, metrics={"bad": object()})
    with pytest.raises(ConfigError, match="unknown architecture"):
        save_checkpoint(tmp_path / "x.pt", res.model, arch="ResNet", task=None, patterns={}, masks=None, metrics={})
