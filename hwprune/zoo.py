"""The built-in model zoo: small task models and standard architectures, with no downloads.

``resnet18``, ``resnet50`` and ``mobilenet_v2`` reproduce torchvision's layer shapes *and*
module names (``layer1.0.downsample.0``, ``features.2.conv.1.0``, ``classifier.1``), so plans
written against torchvision models apply unchanged.  ``bert_layer`` is one BERT-base encoder
layer.  Weights are random but deterministic (``seed``); the zoo is for shapes and cost, not
accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from .errors import ConfigError
from .ir import LayerSpec
from .models import GCN, DigitsCNN, LeNet300100, TinyTransformer, normalized_adjacency

__all__ = ["names", "build", "layers", "ResNet", "BasicBlock", "Bottleneck", "MobileNetV2"]


# -- ResNet (He et al. 2016), torchvision's layout ------------------------------------------------

class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block: two 3×3 convolutions, the first one strided."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3×3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: 7×7 stem, max-pool, four stages, global pool, fc.

    ``ResNet(BasicBlock, [2, 2, 2, 2])`` is ResNet-18 and ``ResNet(Bottleneck, [3, 4, 6, 3])``
    ResNet-50, with torchvision's module names and initialisation.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: list[int],
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(block, 64, depths[0], 1)
        self.layer2 = self._stage(block, 128, depths[1], 2)
        self.layer3 = self._stage(block, 256, depths[2], 2)
        self.layer4 = self._stage(block, 512, depths[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
               stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- MobileNetV2 (Sandler et al. 2018), torchvision's layout --------------------------------------

def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: children 0 (conv), 1 (bn), 2 (ReLU6)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expansion (unless t = 1), 3×3 depthwise, 1×1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(cin, hidden, kernel=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2, width 1.0: ``features.0`` … ``features.18``, ``classifier.1``."""

    #: (expansion t, channels c, repeats n, first stride s), width multiplier 1.0
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(_conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# -- the registry ---------------------------------------------------------------------------------

def _image(gen: torch.Generator, *shape: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(*shape, generator=gen),)


def _digits_cnn(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    return DigitsCNN(), _image(gen, 1, 1, 8, 8)


def _lenet(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    return LeNet300100(), _image(gen, 1, 1, 8, 8)


def _tiny_transformer(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    model = TinyTransformer()
    return model, (torch.randint(0, model.vocab, (1, model.seq_len), generator=gen),)


def _gcn(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    model = GCN()
    n = model.nodes
    upper = torch.triu((torch.rand(n, n, generator=gen) < 8 / n).float(), diagonal=1)
    adj = normalized_adjacency(upper + upper.T)
    return model, (torch.randn(n, model.in_features, generator=gen), adj)


def _resnet18(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    return ResNet(BasicBlock, [2, 2, 2, 2]), _image(gen, 1, 3, 224, 224)


def _resnet50(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    return ResNet(Bottleneck, [3, 4, 6, 3]), _image(gen, 1, 3, 224, 224)


def _mobilenet_v2(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    return MobileNetV2(), _image(gen, 1, 3, 224, 224)


def _bert_layer(gen: torch.Generator) -> tuple[nn.Module, tuple]:
    # BERT-base: d=768, 12 heads, FFN 3072, GELU, post-norm; one sequence of 128 tokens.
    layer = nn.TransformerEncoderLayer(768, 12, 3072, activation="gelu", batch_first=True)
    return layer, _image(gen, 1, 128, 768)


_BUILDERS: dict[str, Callable[[torch.Generator], tuple[nn.Module, tuple]]] = {
    "digits_cnn": _digits_cnn,
    "lenet300100": _lenet,
    "tiny_transformer": _tiny_transformer,
    "gcn": _gcn,
    "resnet18": _resnet18,
    "resnet50": _resnet50,
    "mobilenet_v2": _mobilenet_v2,
    "bert_layer": _bert_layer,
}


def names() -> list[str]:
    """Names of the built-in models, in a stable order (small task models first)."""
    return list(_BUILDERS)


def _check(name: object) -> str:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ConfigError(f"unknown zoo model {name!r}; choose one of {', '.join(_BUILDERS)}")
    return name


def build(name: str, *, seed: int = 0) -> tuple[nn.Module, tuple]:
    """A zoo model in eval mode with deterministic random weights, and its example inputs.

    The global torch random state is left untouched.

    Raises
    ------
    ConfigError
        If ``name`` is not one of :func:`names`.
    """
    builder = _BUILDERS[_check(name)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model, inputs = builder(gen)
    return model.eval(), inputs


def layers(name: str) -> list[LayerSpec]:
    """The layers of zoo model ``name`` (seed 0) as imported by :func:`~hwprune.importers.from_torch`.

    Imported once per process; each call returns a new list of the same frozen specs.
    """
    return list(_layers(_check(name)))


@functools.cache
def _layers(name: str) -> tuple[LayerSpec, ...]:
    from .importers.from_torch import from_torch

    model, inputs = build(name)
    return tuple(from_torch(model, inputs))
