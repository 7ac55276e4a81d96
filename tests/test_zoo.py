"""The built-in zoo: torchvision-identical architectures, deterministic weights, cached layers."""

from __future__ import annotations

import pytest
import torch

from hwprune import zoo
from hwprune.errors import ConfigError
from hwprune.importers import resolve_weight


def test_names():
    assert zoo.names() == ["digits_cnn", "lenet300100", "tiny_transformer", "gcn", "resnet18",
                           "resnet50", "mobilenet_v2", "bert_layer"]


@pytest.mark.parametrize("name, params, macs", [
    # parameter counts and multiply-accumulates as torchvision's model cards state them
    # (ResNet-18: 11,689,512 params, 1.81 GFLOPS; ResNet-50: 25,557,032, 4.09; MobileNetV2:
    # 3,504,872, 0.30); BERT-base layer: 4·768² + 2·768·3072 weights + biases + 2 LayerNorms.
    ("resnet18", 11_689_512, 1.81e9),
    ("resnet50", 25_557_032, 4.09e9),
    ("mobilenet_v2", 3_504_872, 0.30e9),
    ("bert_layer", 4 * 768 * 768 + 2 * 768 * 3072 + 3 * 768 + 768 + 3072 + 768 + 4 * 768, None),
])
def test_architectures_match_their_references(name, params, macs):
    model, _ = zoo.build(name)
    assert sum(p.numel() for p in model.parameters()) == params
    if macs is not None:
        assert sum(s.macs for s in zoo.layers(name)) == pytest.approx(macs, rel=0.01)


def test_torchvision_module_names():
    model, _ = zoo.build("resnet50")
    names = dict(model.named_modules())
    for path in ("conv1", "bn1", "layer1.0.conv3", "layer1.0.downsample.0",
                 "layer1.0.downsample.1", "layer4.2.bn3", "fc"):
        assert path in names
    model, _ = zoo.build("mobilenet_v2")
    assert isinstance(model.get_submodule("features.0.0"), torch.nn.Conv2d)
    assert isinstance(model.get_submodule("features.17.conv.1.0"), torch.nn.Conv2d)
    assert model.get_submodule("features.17.conv.1.0").groups == 960
    assert isinstance(model.get_submodule("classifier.1"), torch.nn.Linear)


def test_build_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, xa = zoo.build("digits_cnn")
    b, xb = zoo.build("digits_cnn")
    c, _ = zoo.build("digits_cnn", seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(xa[0], xb[0])
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not a.training


@pytest.mark.parametrize("name, shape", [
    ("digits_cnn", (1, 10)), ("lenet300100", (1, 10)), ("tiny_transformer", (1, 10)),
    ("gcn", (256, 4)), ("bert_layer", (1, 128, 768)),
])
def test_models_run_on_their_example_inputs(name, shape):
    model, inputs = zoo.build(name)
    with torch.no_grad():
        out = model(*inputs)
    assert out.shape == shape and torch.isfinite(out).all()


def test_gcn_example_graph_is_normalized():
    _, (x, adj) = zoo.build("gcn")
    assert torch.allclose(adj, adj.T)
    assert (torch.diagonal(adj) > 0).all() and (adj > 0).sum() > 256  # self-loops plus edges


def test_layers_cached_and_copied():
    first, second = zoo.layers("lenet300100"), zoo.layers("lenet300100")
    assert first == second and first is not second
    assert all(a is b for a, b in zip(first, second))  # imported once per process
    first.clear()
    assert len(zoo.layers("lenet300100")) == 3


@pytest.mark.parametrize("name", ["digits_cnn", "lenet300100", "tiny_transformer", "gcn"])
def test_every_weight_layer_maps_back_to_its_parameter(name):
    model, _ = zoo.build(name)
    for spec in zoo.layers(name):
        if spec.has_weights:
            module, pname = resolve_weight(model, spec.name)
            torch.testing.assert_close(torch.from_numpy(spec.weight.copy()),
                                       getattr(module, pname).detach().reshape(spec.N, -1))


def test_unknown_name():
    with pytest.raises(ConfigError, match="resnet18.*resnet50"):
        zoo.build("resnet34")
    with pytest.raises(ConfigError, match="unknown zoo model"):
        zoo.layers("vgg16")
