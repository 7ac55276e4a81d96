"""Pruning plans: a sparsity pattern per layer, for one array (written by ``hwprune search``).

File format (JSON)::

    {"array": "os16x16",
     "layers": {"conv1": "dense", "conv2": "2:4", "fc1": "unstructured:0.25", "fc2": "channel:0.5"}}

``array`` names a preset or a TOML path; ``layers`` maps a layer name (the module path of the
weight, as :func:`hwprune.importers.from_torch` names it) to the text form of a pattern
(:func:`hwprune.patterns.parse_pattern`).  Layers not listed stay dense.  Unknown keys are
rejected so typos do not pass silently.

A plan written by the search says what it predicts and where it came from.  A layer's value is
then an object, and four optional top-level keys record the provenance::

    {"array": "os16x16",
     "criterion": "l1", "model_hash": "sha256:…",
     "budget": {"fraction": 0.5, "cycles": null, "energy_pj": null, "weight_bytes": null},
     "search": {"task": "digits_cnn", "method": "exact", "predicted": {"cycles": 1913, …}, …},
     "layers": {
       "conv2": {"pattern": "2:4", "cycles": 640, "energy_pj": 91800.0, "weight_bytes": 1152,
                 "sensitivity": {"loss": 0.004, "accuracy": -0.0028}},
       "fc1":   {"pattern": "block:16x4:0.5", …,
                 "mask": {"shape": [64, 512], "packbits": "<base64 of zlib(numpy.packbits)>"}}}}

``mask`` appears only where the pattern alone does not fix the layer's cost (blocks and
unstructured weights under group skipping, N:M ratios the array runs padded), so that
``hwprune estimate MODEL --plan`` reproduces the search's prediction without pruning.  Plain
string layers (the first format) still load, and a plan without predictions is written back in
the first format.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io import write_text
from ..patterns import SparsityPattern, parse_pattern

__all__ = [
    "LayerPrediction",
    "PruningPlan",
    "load_plan",
    "pack_mask",
    "plan_from_dict",
    "save_plan",
    "unpack_mask",
]

_TOP_KEYS = ("array", "layers", "criterion", "model_hash", "budget", "search")
_LAYER_KEYS = ("pattern", "cycles", "energy_pj", "weight_bytes", "sensitivity", "mask")


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LayerPrediction:
    """What the search predicts for one layer: its cost and its sensitivity (loss in nats,
    accuracy as a fraction; None when not measured)."""

    cycles: int
    energy_pj: float
    weight_bytes: int
    loss: float | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cycles": self.cycles, "energy_pj": self.energy_pj, "weight_bytes": self.weight_bytes,
                "sensitivity": {"loss": self.loss, "accuracy": self.accuracy}}


@dataclass(frozen=True, slots=True)
class PruningPlan:
    """Validated plan: array name and a read-only mapping layer name → SparsityPattern.

    A searched plan also carries per-layer predictions, the masks whose cost the pattern does
    not fix, and its provenance (criterion, model hash, budget, search details).
    """

    array: str
    layers: Mapping[str, SparsityPattern]
    predicted: Mapping[str, LayerPrediction] = field(default_factory=_empty)
    masks: Mapping[str, np.ndarray] = field(default_factory=_empty)
    criterion: str | None = None
    model_hash: str | None = None
    budget: Mapping[str, Any] | None = None
    search: Mapping[str, Any] | None = None

    @classmethod
    def make(cls, array: str, layers: Mapping[str, SparsityPattern | str], *,
             predicted: Mapping[str, LayerPrediction] | None = None,
             masks: Mapping[str, np.ndarray] | None = None, criterion: str | None = None,
             model_hash: str | None = None, budget: Mapping[str, Any] | None = None,
             search: Mapping[str, Any] | None = None) -> PruningPlan:
        if not isinstance(array, str) or not array:
            raise ConfigError(f"plan 'array' must be a non-empty string, not {array!r}")
        if not isinstance(layers, Mapping):
            raise ConfigError(f"plan 'layers' must map layer names to patterns, not {layers!r}")
        parsed = {}
        for name, pat in layers.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"plan layer names must be non-empty strings, not {name!r}")
            try:
                parsed[name] = parse_pattern(pat)
            except ConfigError as exc:
                raise ConfigError(f"plan layer {name!r}: {exc}") from None
        for what, keys in (("predictions", predicted or {}), ("masks", masks or {})):
            stray = sorted(set(keys) - set(parsed))
            if stray:
                raise ConfigError(f"plan has {what} for layers it gives no pattern: {', '.join(stray)}")
        frozen_masks = {}
        for name, m in (masks or {}).items():
            m = np.array(m, dtype=bool)
            if m.ndim != 2:
                raise ConfigError(f"plan mask of {name!r} must be N×K, not of shape {m.shape}")
            m.setflags(write=False)
            frozen_masks[name] = m
        for key, value in (("criterion", criterion), ("model_hash", model_hash)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"plan {key!r} must be a non-empty string, not {value!r}")
        for key, value in (("budget", budget), ("search", search)):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"plan {key!r} must be an object, not {value!r}")
        return cls(array, MappingProxyType(parsed), MappingProxyType(dict(predicted or {})),
                   MappingProxyType(frozen_masks), criterion, model_hash,
                   None if budget is None else MappingProxyType(dict(budget)),
                   None if search is None else MappingProxyType(dict(search)))

    def check_layers(self, known: Iterable[str]) -> None:
        """ConfigError naming any plan layer the model does not have."""
        known = set(known)
        unknown = sorted(set(self.layers) - known)
        if unknown:
            raise ConfigError(f"plan names layers the model does not have: {', '.join(unknown)}; "
                              f"prunable layers: {', '.join(sorted(known))}")

    def to_dict(self) -> dict[str, object]:
        layers: dict[str, object] = {}
        for name, pat in self.layers.items():
            pred, mask = self.predicted.get(name), self.masks.get(name)
            if pred is None and mask is None:
                layers[name] = str(pat)
                continue
            entry: dict[str, object] = {"pattern": str(pat)}
            if pred is not None:
                entry.update(pred.to_dict())
            if mask is not None:
                entry["mask"] = pack_mask(mask)
            layers[name] = entry
        out: dict[str, object] = {"array": self.array}
        for key in ("criterion", "model_hash"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("budget", "search"):
            if getattr(self, key) is not None:
                out[key] = _plain(getattr(self, key))
        out["layers"] = layers
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def pack_mask(mask: np.ndarray) -> dict[str, object]:
    """A boolean N×K mask as JSON: its shape and base64(zlib(packbits)) of its rows."""
    m = np.asarray(mask, dtype=bool)
    data = zlib.compress(np.packbits(m.ravel()).tobytes(), 9)
    return {"shape": list(m.shape), "packbits": base64.b64encode(data).decode("ascii")}


def unpack_mask(data: object, *, where: str = "mask") -> np.ndarray:
    """Inverse of :func:`pack_mask`; ConfigError naming ``where`` for anything malformed."""
    if not isinstance(data, Mapping) or set(data) != {"shape", "packbits"}:
        raise ConfigError(f"{where}: a mask must be {{'shape': [N, K], 'packbits': '...'}}, not {data!r:.80}")
    shape = data["shape"]
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ConfigError(f"{where}: mask shape must be two positive integers, not {shape!r}")
    try:
        raw = zlib.decompress(base64.b64decode(str(data["packbits"]), validate=True))
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise ConfigError(f"{where}: mask bits are corrupted ({exc})") from None
    n = shape[0] * shape[1]
    if len(raw) != math.ceil(n / 8):
        raise ConfigError(f"{where}: mask holds {len(raw) * 8} bits, shape {shape[0]}×{shape[1]} needs {n}")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool).reshape(shape)


def _number(where: str, value: object, kind: type) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be a non-negative {'integer' if kind is int else 'number'}, not {value!r}")
    return kind(value)


def _layer_entry(name: str, value: object, source: str) -> tuple[object, LayerPrediction | None, np.ndarray | None]:
    """(pattern text, prediction, mask) of one ``layers`` value (string or object)."""
    if not isinstance(value, Mapping):
        return value, None, None
    where = f"{source}: layer {name!r}"
    unknown = sorted(set(value) - set(_LAYER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {list(_LAYER_KEYS)}")
    if "pattern" not in value:
        raise ConfigError(f"{where}: missing 'pattern'")
    mask = unpack_mask(value["mask"], where=f"{where} mask") if "mask" in value else None
    costs = [k for k in ("cycles", "energy_pj", "weight_bytes") if k in value]
    if not costs:
        return value["pattern"], None, mask
    if len(costs) != 3:
        raise ConfigError(f"{where}: a prediction needs cycles, energy_pj and weight_bytes, has only {costs}")
    sens = value.get("sensitivity") or {}
    if not isinstance(sens, Mapping) or set(sens) - {"loss", "accuracy"}:
        raise ConfigError(f"{where}: sensitivity must be {{'loss': x, 'accuracy': y}}, not {sens!r}")
    loss, acc = sens.get("loss"), sens.get("accuracy")
    for key, v in (("loss", loss), ("accuracy", acc)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ConfigError(f"{where}: sensitivity {key} must be a finite number or null, not {v!r}")
    pred = LayerPrediction(_number(f"{where} cycles", value["cycles"], int),
                           _number(f"{where} energy_pj", value["energy_pj"], float),
                           _number(f"{where} weight_bytes", value["weight_bytes"], int),
                           None if loss is None else float(loss), None if acc is None else float(acc))
    return value["pattern"], pred, mask


def plan_from_dict(data: object, *, source: str = "plan") -> PruningPlan:
    """Validate a decoded plan; errors name ``source`` and the bad value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a plan must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown plan keys {unknown}; expected 'array' and 'layers' "
                          f"(and optionally {', '.join(repr(k) for k in _TOP_KEYS[2:])})")
    for key in ("array", "layers"):
        if key not in data:
            raise ConfigError(f"{source}: plan is missing {key!r}")
    layers = data["layers"]
    if not isinstance(layers, Mapping):
        raise ConfigError(f"{source}: plan 'layers' must map layer names to patterns, not {layers!r:.80}")
    patterns, predicted, masks = {}, {}, {}
    for name, value in layers.items():
        patterns[name], pred, mask = _layer_entry(name, value, source)
        if pred is not None:
            predicted[name] = pred
        if mask is not None:
            masks[name] = mask
    try:
        return PruningPlan.make(data["array"], patterns, predicted=predicted, masks=masks,
                                criterion=data.get("criterion"), model_hash=data.get("model_hash"),
                                budget=data.get("budget"), search=data.get("search"))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_plan(path: str | os.PathLike) -> PruningPlan:
    """Read and validate a plan file (ConfigError names the path and the problem)."""
    from ..config import read_text

    p = Path(path)
    text = read_text(p, "plan")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return plan_from_dict(data, source=str(p))


def save_plan(path: str | os.PathLike, plan: PruningPlan, *, force: bool = False) -> Path:
    """Write a plan atomically (refuses to overwrite without ``force``)."""
    return write_text(path, json.dumps(plan.to_dict(), indent=2) + "\n", force=force)
