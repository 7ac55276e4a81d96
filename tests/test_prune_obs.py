"""The ``obs`` criterion: OBS saliency from the input Hessian XᵀX, and least-squares compensation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hwprune.patterns import NM, Unstructured
from hwprune.prune import LayerContext, LayerStats, compute_scores, prunable_layers, prune_model
from hwprune.prune.criteria import OBS_DAMPING, obs_reconstruct
from hwprune.prune.engine import collect_stats
from hwprune.tasks import Split, Task
from hwprune.train import clone_model


def task_for(x: torch.Tensor, classes: int = 3, seed: int = 0) -> Task:
    y = torch.randint(0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
    s = Split((x,), y)
    return Task("tiny", "random", "LeNet300100", {}, s, s, s, epochs=1, lr=1e-2, batch_size=16)


def calibration_inputs(task: Task, batches: int) -> torch.Tensor:
    """The inputs :func:`collect_stats` reads (the task's seeded calibration batches)."""
    return torch.cat([b.inputs[0] for b in task.calibration_batches(batches, seed=0)])


def test_gram_is_xtx_of_the_layer_inputs_linear_conv_and_grouped():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1, groups=3),
                          nn.Flatten(), nn.Linear(6 * 25, 3))
    task = task_for(torch.randn(32, 4, 5, 5, generator=g))
    targets = prunable_layers(model)
    stats = collect_stats(model, targets, task, frozenset({"gram"}), batches=2)
    x = calibration_inputs(task, 2)
    with torch.no_grad():
        h1 = model[0](x)
        h2 = model[1](h1)
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 36).double()
    assert torch.allclose(stats["0"].gram[0], cols.T @ cols, rtol=1e-8)
    cols2 = F.unfold(h1, 3, padding=1).transpose(1, 2).reshape(-1, 54).double()
    assert stats["1"].gram.shape == (3, 18, 18)  # one K×K block per group (K = 2 channels × 9)
    for j in range(3):
        c = cols2[:, 18 * j:18 * (j + 1)]
        assert torch.allclose(stats["1"].gram[j], c.T @ c, rtol=1e-6)
    flat = h2.flatten(1).double()
    assert torch.allclose(stats["3"].gram[0], flat.T @ flat, rtol=1e-6)


def test_reconstruction_is_the_damped_least_squares_fit_of_each_row():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 12, generator=g, dtype=torch.float64)
    x[:, 3] = x[:, 0] + 0.1 * x[:, 1]  # correlated inputs: what the compensation exploits
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    keep = torch.rand(5, 12, generator=g) < 0.4
    keep[:, 0] = True
    gram = (x.T @ x)[None]
    ctx = LayerContext("fc", w, Unstructured(0.4), LayerStats(batches=1, gram=gram), 0)
    out = obs_reconstruct(ctx, keep)
    assert (out[~keep] == 0).all()
    lam = OBS_DAMPING * gram[0].diagonal().mean()
    for i in range(5):
        s = keep[i]
        # min ‖Xw − X_S v‖² + λ‖w_S − v‖² (= (w−ŵ)ᵀ(XᵀX+λI)(w−ŵ) with ŵ_P = 0), stacked lstsq
        a = torch.cat([x[:, s], lam.sqrt() * torch.eye(int(s.sum()), dtype=torch.float64)])
        b = torch.cat([x @ w[i], lam.sqrt() * w[i, s]])
        ref = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
        assert torch.allclose(out[i, s], ref, rtol=1e-6, atol=1e-9)
    # it beats plain masking on the layer's own output error
    err = lambda v: (x @ (w - v).T).square().sum()  # noqa: E731
    assert err(out) < err(torch.where(keep, w, torch.zeros_like(w)))


def test_obs_saliency_is_w2_over_inverse_hessian_diagonal_layer_normalised():
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    task = task_for(torch.randn(32, 8, generator=g))
    targets = prunable_layers(model)
    s = compute_scores(model, task, "obs", {"0": Unstructured(0.5)}, calib_batches=2, targets=targets)["0"]
    x = calibration_inputs(task, 2).double()
    h = x.T @ x
    h = h + OBS_DAMPING * h.diagonal().mean() * torch.eye(8, dtype=torch.float64)
    ref = targets["0"].weight.double().square() / torch.linalg.inv(h).diagonal()[None]
    assert torch.allclose(s, ref / ref.norm(), rtol=1e-6)
    assert abs(float(s.norm()) - 1.0) < 1e-9


def test_obs_prunes_with_torch_masks_and_compensates_in_order():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 12, generator=g)
    x[:, 6:] = x[:, :6] + 0.05 * torch.randn(64, 6, generator=g)  # redundant inputs
    task = task_for(x)
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    for pattern, scope in (("unstructured:0.3", "global"), ("2:4", "layer")):
        model = clone_model(dense)
        res = prune_model(model, pattern, data=task, criterion="obs", scope=scope, finetune_epochs=0,
                          calib_batches=4)
        for name, t in prunable_layers(model).items():
            mask = t.module.weight_mask.bool()
            assert torch.equal(t.module.weight, t.module.weight_orig * t.module.weight_mask)  # torch prune
            assert np.array_equal(res.masks[name], mask.numpy())
            if isinstance(res.patterns[name], NM):
                assert (mask.reshape(8 if name == "0" else 3, -1, 4).sum(-1) == 2).all()
        # layer 0: kept weights moved, and its output error on the calibration inputs dropped
        w0, m0 = dense[0].weight.detach(), model[0].weight_mask.bool()
        assert not torch.allclose(model[0].weight_orig[m0], w0[m0])
        xc = calibration_inputs(task, 4)
        target = xc @ w0.T
        assert (xc @ model[0].weight.detach().T - target).square().sum() < \
               (xc @ (w0 * m0).T - target).square().sum()
        # layer 2 was fitted to the inputs the compensated layer 0 gives it (sequential order)
        with torch.no_grad():
            h = torch.relu(model[0](xc))
        w2, m2 = dense[2].weight.detach(), model[2].weight_mask.bool()
        fit = (h @ model[2].weight.detach().T - h @ w2.T).square().sum()
        assert fit < (h @ (w2 * m2).T - h @ w2.T).square().sum()


def test_search_measures_obs_candidates_with_their_compensation(tmp_path):
    """A (layer, candidate) sensitivity of ``obs`` is the loss change prune_model's obs gives."""
    from hwprune.search import build_table
    from hwprune.search.sensitivity import val_metrics

    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 12, generator=g)
    x[:, 6:] = x[:, :6] + 0.05 * torch.randn(64, 6, generator=g)
    task = task_for(x)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    table = build_table(model, task, criterion="obs", candidates=["unstructured:0.25"], calib_batches=4,
                        cache_dir=tmp_path, use_cache=False)
    base_loss, _ = val_metrics(model, task)
    j = 0 if table.candidates[0] == Unstructured(0.25) else 1
    for i, name in enumerate(table.layers):
        pruned = clone_model(model)
        prune_model(pruned, {name: "unstructured:0.25"}, data=task, criterion="obs", finetune_epochs=0,
                    calib_batches=4)
        loss, _ = val_metrics(pruned, task)
        assert table.loss[i, j] == pytest.approx(loss - base_loss, rel=1e-5, abs=1e-7)
    # and not the loss of the mask alone
    plain = clone_model(model)
    prune_model(plain, {"0": "unstructured:0.25"}, data=task, criterion="obs", finetune_epochs=0,
                calib_batches=4)
    plain[0].weight_orig.data.copy_(model[0].weight.data)
    assert val_metrics(plain, task)[0] - base_loss != pytest.approx(table.loss[0, j], rel=1e-3)
