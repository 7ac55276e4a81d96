"""Pruning engine: criterion × pattern masks, scopes, schedules, torch.nn.utils.prune conventions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from hwprune.errors import ConfigError
from hwprune.patterns import NM, Block, Channel, Dense, Unstructured, parse_pattern
from hwprune.prune import (CRITERIA, PatternPruning, PruningPlan, agp_sparsity, apply_patterns, layer_mask,
                           at_fraction, compute_scores, criterion_names, current_masks,
                           global_patterns, load_plan, make_permanent, pattern_prune,
                           prunable_layers, prune_model, register_criterion, save_plan,
                           shrink_channels)
from hwprune.tasks import Split, Task, load_task
from hwprune.train import clone_model, evaluate, train

ALL_CRITERIA = ["l1", "l2", "random", "taylor", "hessian", "activation", "obs"]


def tiny_task(n_in: int, classes: int, *, conv: bool = False, seed: int = 0) -> Task:
    """A random classification task over (B, n_in) or (B, C, 5, 5) inputs, 2 batches."""
    g = torch.Generator().manual_seed(seed)
    shape = (32, n_in, 5, 5) if conv else (32, n_in)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, classes, (32,), generator=g)
    s = Split((x,), y)
    return Task("tiny", "random", "LeNet300100", {}, s, s, s, epochs=1, lr=1e-2, batch_size=16)


def tiny_model(n_in: int, n_out: int, *, conv: bool, k: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if conv:
        return nn.Sequential(nn.Conv2d(n_in, n_out, k, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(n_out * 25, 3))
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(), nn.Linear(n_out, 3))


patterns = st.one_of(
    st.floats(0.05, 1.0).map(Unstructured),
    st.integers(2, 8).flatmap(lambda m: st.integers(1, m - 1).map(lambda n: NM(n, m))),
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.floats(0.1, 1.0)).map(lambda t: Block(*t)),
    st.floats(0.1, 1.0).map(Channel),
)


def check_structure(mask: np.ndarray, pat, row_floor: int = 1) -> None:
    """The mask has exactly the pattern's structure and kept count (with the per-row floor)."""
    n, k = mask.shape
    if isinstance(pat, Unstructured):
        assert mask.sum() == max(pat.keep_count(mask.size), n * min(row_floor, k))
        assert (mask.sum(axis=1) >= min(row_floor, k)).all()
    elif isinstance(pat, NM):
        for start in range(0, k, pat.m):
            group = mask[:, start:start + pat.m]
            assert (group.sum(axis=1) == min(pat.n, group.shape[1])).all()
    elif isinstance(pat, Channel):
        rows = mask.any(axis=1)
        assert (mask[rows].all()) and rows.sum() == pat.keep_count(n)
    elif isinstance(pat, Block):
        gr, gc = math.ceil(n / pat.bh), math.ceil(k / pat.bw)
        kept = 0
        for i in range(gr):
            for j in range(gc):
                blk = mask[i * pat.bh:(i + 1) * pat.bh, j * pat.bw:(j + 1) * pat.bw]
                assert blk.all() or not blk.any()
                kept += int(blk.all())
        assert kept == pat.keep_count(gr * gc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(criterion=st.sampled_from(ALL_CRITERIA), pat=patterns, conv=st.booleans(),
       n_in=st.integers(1, 6), n_out=st.integers(2, 12), seed=st.integers(0, 3))
def test_every_criterion_and_pattern_gives_the_exact_structure(criterion, pat, conv, n_in, n_out, seed):
    model = tiny_model(n_in, n_out, conv=conv, seed=seed)
    task = tiny_task(n_in, 3, conv=conv, seed=seed)
    targets = prunable_layers(model)
    pats = {name: pat for name in targets}
    scores = compute_scores(model, task, criterion, pats, seed=seed, calib_batches=2, targets=targets)
    for name, s in scores.items():
        assert s.shape == targets[name].weight.shape  # N×K = weight.reshape(N, -1)
        assert torch.isfinite(s).all() and (s >= 0).all()
    apply_patterns(targets, pats, scores)
    masks = current_masks(model, targets)
    for name, t in targets.items():
        mask = masks[name]
        check_structure(mask, pat)
        # the torch prune reparametrisation holds exactly the pattern's mask of the scores
        assert np.array_equal(mask, layer_mask(pat, scores[name].numpy()))
        if not isinstance(pat, Unstructured) or (pat.mask(scores[name].numpy()).any(axis=1)).all():
            assert np.array_equal(mask, pat.mask(scores[name].numpy()))  # the floor did not bind
        w = t.weight.numpy()
        assert (w[~mask] == 0).all()


def test_criteria_registry_rejects_duplicates_and_unknown_stats():
    assert criterion_names()[:7] == ALL_CRITERIA
    with pytest.raises(ConfigError, match="already registered"):
        register_criterion("l1", lambda ctx: ctx.weight.abs())
    with pytest.raises(ConfigError, match="unknown statistics"):
        register_criterion("nope_stats", lambda ctx: ctx.weight, needs={"curvature"})
    with pytest.raises(ConfigError, match="unknown criterion 'l3'"):
        prune_model(tiny_model(4, 4, conv=False), tiny_task(4, 3), criterion="l3", pattern="2:4")


def test_criteria_mean_what_they_say():
    model = tiny_model(6, 4, conv=False)
    task = tiny_task(6, 3)
    t = prunable_layers(model)
    pats = {"0": Unstructured(0.5)}
    w = t["0"].weight.double()
    l1 = compute_scores(model, task, "l1", pats, targets=t)["0"]
    l2 = compute_scores(model, task, "l2", pats, targets=t)["0"]
    assert torch.allclose(l1, w.abs()) and torch.allclose(l2, w.square())
    r1 = compute_scores(model, task, "random", pats, seed=1, targets=t)["0"]
    assert torch.equal(r1, compute_scores(model, task, "random", pats, seed=1, targets=t)["0"])
    assert not torch.equal(r1, compute_scores(model, task, "random", pats, seed=2, targets=t)["0"])
    # Wanda: |w_ij|·‖x_j‖ with x the layer input over the calibration batches, L2-normalised per layer
    x = torch.cat([b.inputs[0] for b in task.batches("train", shuffle=True,
                                                      generator=torch.Generator().manual_seed(0))])
    act = compute_scores(model, task, "activation", pats, targets=t)["0"]
    wanda = w.abs() * x.double().norm(dim=0)[None, :]
    assert torch.allclose(act, wanda / wanda.norm(), rtol=1e-5)  # normalised over the layer
    # channels: mean |output| of each channel
    ch = compute_scores(model, task, "activation", {"0": Channel(0.5)}, targets=t)["0"]
    out = model[0](x).abs().mean(0).double()
    assert torch.allclose(ch[:, 0], out, rtol=1e-4)
    # Taylor per sample, mean |w·gᵢ|, and OBD ½·E[gᵢ²]·w² (empirical Fisher), both from the
    # per-sample gradients gᵢ of the calibration batch, computed sample by sample here
    tay = compute_scores(model, task, "taylor", pats, targets=t)["0"]
    hes = compute_scores(model, task, "hessian", pats, targets=t)["0"]
    y = task.train.targets[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, [model[0].weight])
    per = torch.stack([torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]),
                                           [model[0].weight])[0].double() for i in range(32)])
    assert torch.allclose(tay, w.abs() * per.abs().mean(0), rtol=1e-5, atol=1e-14)
    assert not torch.allclose(tay, (w * g.double()).abs(), rtol=1e-2)  # not the batch-mean gradient
    fisher = per.square().mean(0)
    assert torch.allclose(hes, 0.5 * fisher * w.square(), rtol=1e-5, atol=1e-14)
    assert not torch.allclose(hes, 0.5 * g.double().square() * w.square(), rtol=1e-2)  # not the batch mean
    assert set(CRITERIA) >= set(ALL_CRITERIA)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(4, 300), min_size=2, max_size=5), density=st.floats(0.1, 0.9),
       floor=st.floats(0.01, 0.1), seed=st.integers(0, 100))
def test_global_scope_one_threshold_with_a_floor(sizes, density, floor, seed):
    g = torch.Generator().manual_seed(seed)
    # layer 0's scores are far below everything else: only the floor keeps any of it
    scores = {f"l{i}": torch.rand(s, generator=g, dtype=torch.float64)[None, :] + (0 if i == 0 else 10)
              for i, s in enumerate(sizes)}
    total = sum(sizes)
    floors = {n: min(s.numel(), max(1, math.ceil(floor * s.numel()))) for n, s in scores.items()}
    if sum(floors.values()) > round(density * total):
        with pytest.raises(ConfigError, match="floor"):
            global_patterns(scores, density, min_density=floor)
        return
    pats = global_patterns(scores, density, min_density=floor)
    kept = {n: pats[n].keep_count(s.numel()) for n, s in scores.items()}
    assert sum(kept.values()) == max(1, round(density * total))
    for n in scores:
        assert kept[n] >= floors[n]
    others = sum(sizes[1:]) - sum(floors[f"l{i}"] for i in range(1, len(sizes)))
    if round(density * total) - sum(floors.values()) <= others:
        assert kept["l0"] == floors["l0"]


def test_global_scope_on_a_model_respects_floor_and_total():
    task = load_task("lenet300100")
    model = task.make_model(0)
    train(model, task, epochs=1)
    res = prune_model(model, task, pattern="unstructured:0.1", scope="global", min_density=0.05,
                      finetune_epochs=0)
    sizes = {n: m.size for n, m in res.masks.items()}
    kept = {n: int(m.sum()) for n, m in res.masks.items()}
    assert sum(kept.values()) == round(0.1 * sum(sizes.values()))
    assert all(kept[n] >= math.ceil(0.05 * sizes[n]) for n in sizes)
    assert len(set(round(k / sizes[n], 3) for n, k in kept.items())) > 1  # not uniform
    with pytest.raises(ConfigError, match="global scope"):
        prune_model(clone_model(model), task, pattern="2:4", scope="global")


def test_agp_follows_zhu_and_gupta():
    s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 5, 4
    for t in range(t0, t0 + n * dt + 1):
        assert agp_sparsity(t, s_i=s_i, s_f=s_f, t0=t0, n=n, dt=dt) == pytest.approx(
            s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3)
    assert agp_sparsity(0, s_i=s_i, s_f=s_f, t0=t0, n=n, dt=dt) == pytest.approx(s_i)
    assert agp_sparsity(10**6, s_i=s_i, s_f=s_f, t0=t0, n=n, dt=dt) == pytest.approx(s_f)


def test_agp_schedule_in_the_engine():
    task = load_task("lenet300100")
    model = task.make_model(0)
    train(model, task, epochs=1)
    res = prune_model(model, task, pattern="unstructured:0.2", schedule="agp", steps=4, finetune_epochs=2)
    fr = [h["fraction"] for h in res.history]
    assert fr == pytest.approx([1 - (1 - j / 4) ** 3 for j in range(1, 5)], abs=1e-6)
    dens = [h["density"] for h in res.history]
    assert dens == sorted(dens, reverse=True) and dens[-1] == pytest.approx(0.2, abs=1e-3)
    assert [h["step"] for h in res.history] == sorted(h["step"] for h in res.history)


def test_iterative_masks_nest_and_nm_steps_down():
    assert [str(at_fraction(NM(1, 4), f)) for f in (1 / 3, 2 / 3, 1.0)] == ["3:4", "2:4", "1:4"]
    assert at_fraction(Unstructured(0.2), 0.5) == Unstructured(0.6)
    assert at_fraction(Dense(), 0.5) == Dense()
    task = load_task("lenet300100")
    model = task.make_model(0)
    train(model, task, epochs=1)
    masks = []
    for frac in (0.5, 1.0):
        t = prunable_layers(model)
        pats = {n: at_fraction(Unstructured(0.3), frac) for n in t}
        apply_patterns(t, pats, compute_scores(model, task, "random", pats, seed=int(frac * 10), targets=t))
        masks.append(current_masks(model))
    for name in masks[0]:
        assert not (masks[1][name] & ~masks[0][name]).any()  # nothing pruned comes back
    # torch prune stacked both steps in a PruningContainer
    assert any(isinstance(h, prune.PruningContainer) for h in model.fc1._forward_pre_hooks.values())


def test_prune_remove_round_trip_and_functional_form():
    lin = nn.Linear(8, 4)
    orig = lin.weight.detach().clone()
    pattern_prune(lin, "weight", "2:4")
    assert {n for n, _ in lin.named_parameters()} == {"weight_orig", "bias"}
    assert "weight_mask" in dict(lin.named_buffers())
    mask = lin.weight_mask.bool()
    assert np.array_equal(mask.numpy(), NM(2, 4).mask(orig.abs().numpy()))
    assert prune.is_pruned(lin)
    prune.remove(lin, "weight")
    assert not prune.is_pruned(lin)
    assert isinstance(lin.weight, nn.Parameter)
    assert torch.equal(lin.weight.detach(), orig * mask)
    # a conv weight is viewed as weight.reshape(N, -1): N:M groups run along (c, kh, kw)
    conv = nn.Conv2d(3, 5, 2)
    PatternPruning.apply(conv, "weight", NM(1, 4))
    m2 = conv.weight_mask.reshape(5, -1)
    assert (m2.reshape(5, 3, 4).sum(-1) == 1).all()
    make_permanent(conv)
    assert not prune.is_pruned(conv) and (conv.weight.reshape(5, -1) != 0).sum() <= 15


def test_pruned_weights_stay_exactly_zero_through_fine_tuning():
    task = load_task("digits_cnn")
    model = task.make_model(0)
    train(model, task, epochs=1)
    res = prune_model(model, task, criterion="taylor", pattern="2:4", finetune_epochs=1)
    before = {n: t.orig.detach().clone() for n, t in prunable_layers(model).items()}
    train(model, task, epochs=1, lr=1e-2)
    for name, t in prunable_layers(model).items():
        w = t.weight.numpy()
        assert (w[~res.masks[name]] == 0).all()
        assert not torch.equal(before[name], t.orig.detach())  # the rest did train
    make_permanent(model)
    for name, m in res.masks.items():
        assert (prunable_layers(model)[name].weight.numpy()[~m] == 0).all()


def test_channel_pruning_spares_the_classifier_and_shrinks_exactly():
    task = load_task("digits_cnn")
    model = task.make_model(0)
    train(model, task, epochs=1)
    res = prune_model(model, task, criterion="l2", pattern="channel:0.5", finetune_epochs=1)
    assert "fc2" not in res.masks and set(res.masks) == {"conv1", "conv2", "fc1"}
    small = shrink_channels(model, task.example_inputs(2))
    assert (small.conv1.out_channels, small.bn1.num_features, small.conv2.in_channels) == (8, 8, 8)
    assert small.fc1.in_features == 16 * 16 and small.fc2.in_features == 32
    x = task.example_inputs(16)[0]
    model.eval()
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert evaluate(small, task) == evaluate(model, task)


def test_hybrid_plan_file_round_trip_and_validation(tmp_path):
    plan = PruningPlan.make("os16x16", {"conv1": "dense", "conv2": "2:4", "fc1": "unstructured:0.25"})
    path = save_plan(tmp_path / "plan.json", plan)
    assert json.loads(path.read_text()) == plan.to_dict()
    loaded = load_plan(path)
    assert loaded.layers["conv2"] == NM(2, 4) and loaded.array == "os16x16"
    with pytest.raises(Exception, match="exists"):
        save_plan(path, plan)
    task = load_task("digits_cnn")
    model = task.make_model(0)
    res = prune_model(model, task, plan=loaded, finetune_epochs=0)
    assert set(res.masks) == {"conv2", "fc1"}
    check_structure(res.masks["conv2"], NM(2, 4))
    assert res.masks["fc1"].mean() == pytest.approx(0.25, abs=1e-3)
    for bad, msg in [('{"array": "x"}', "missing 'layers'"), ('{"array": "x", "layers": {"a": "5:4"}}', "'a'"),
                     ('{"array": "x", "layers": {}, "extra": 1}', "unknown plan keys"), ("[1]", "JSON object"),
                     ("{", "not valid JSON")]:
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(ConfigError, match=msg):
            load_plan(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not have: nope"):
        prune_model(model, task, plan=PruningPlan.make("os16x16", {"nope": "2:4"}))


def test_bad_engine_arguments_name_the_value():
    task = tiny_task(4, 3)
    model = tiny_model(4, 4, conv=False)
    for kwargs, msg in [({"pattern": "2:4", "scope": "world"}, "world"),
                        ({"pattern": "2:4", "schedule": "cosine"}, "cosine"),
                        ({"pattern": "2:4", "steps": 3}, "steps=3"),
                        ({"pattern": "2:4", "schedule": "agp", "steps": 0}, "not 0"),
                        ({"pattern": "blob:3"}, "blob:3"),
                        ({}, "exactly one")]:
        with pytest.raises(ConfigError, match=msg):
            prune_model(model, task, **kwargs)


def test_transformer_layers_include_attention_projections():
    task = load_task("transformer")
    model = task.make_model(0)
    names = list(prunable_layers(model))
    assert "encoder.layers.0.self_attn.in_proj" in names and "encoder.layers.0.self_attn.out_proj" in names
    res = prune_model(model, task, criterion="activation", pattern="2:4", finetune_epochs=0, calib_batches=1)
    for name, m in res.masks.items():
        check_structure(m, NM(2, 4))
    assert parse_pattern(str(res.patterns[names[0]])) == NM(2, 4)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h)))))
        return self.fc(torch.relu(h + y).mean((2, 3)))


def test_shrinking_respects_residual_couplings():
    from hwprune.prune import layer_graph
    torch.manual_seed(0)
    model = _Residual().eval()
    x = torch.randn(4, 1, 8, 8)
    targets = prunable_layers(model)
    _, followers = layer_graph(model, (x,), targets)
    pats = {"conv1": Channel(0.5), "conv2": Channel(0.5)}
    apply_patterns(targets, pats, {n: targets[n].weight.abs().double() for n in pats}, followers)
    small = shrink_channels(model, (x,))
    assert small.conv1.out_channels == 4 and small.conv2.in_channels == 4   # inner: removed
    assert small.conv2.out_channels == 8 and small.stem.out_channels == 8   # added to live stem
    assert torch.allclose(small(x), model(x), atol=1e-5)
    with pytest.raises(ConfigError, match="coupled"):
        shrink_channels(model, (x,), strict=True)
