"""Pruning plans: a sparsity pattern per layer, for one array (written by ``search``).

File format (JSON)::

    {"array": "os16x16",
     "layers": {"conv1": "dense", "conv2": "2:4", "fc1": "unstructured:0.25", "fc2": "channel:0.5"}}

``array`` names a preset or a TOML path; ``layers`` maps a layer name (the module path of the
weight, as :func:`hwprune.importers.from_torch` names it) to the text form of a pattern
(:func:`hwprune.patterns.parse_pattern`).  Layers not listed stay dense.  Unknown top-level keys
are rejected so typos do not pass silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigError
from ..io import write_text
from ..patterns import SparsityPattern, parse_pattern

__all__ = ["PruningPlan", "load_plan", "save_plan", "plan_from_dict"]


@dataclass(frozen=True, slots=True)
class PruningPlan:
    """Validated plan: array name and a read-only mapping layer name → SparsityPattern."""

    array: str
    layers: Mapping[str, SparsityPattern]

    @classmethod
    def make(cls, array: str, layers: Mapping[str, SparsityPattern | str]) -> PruningPlan:
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
        return cls(array, MappingProxyType(parsed))

    def check_layers(self, known: Iterable[str]) -> None:
        """ConfigError naming any plan layer the model does not have."""
        known = set(known)
        unknown = sorted(set(self.layers) - known)
        if unknown:
            raise ConfigError(f"plan names layers the model does not have: {', '.join(unknown)}; "
                              f"prunable layers: {', '.join(sorted(known))}")

    def to_dict(self) -> dict[str, object]:
        return {"array": self.array, "layers": {k: str(v) for k, v in self.layers.items()}}


def plan_from_dict(data: object, *, source: str = "plan") -> PruningPlan:
    """Validate a decoded plan; errors name ``source`` and the bad value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a plan must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - {"array", "layers"})
    if unknown:
        raise ConfigError(f"{source}: unknown plan keys {unknown}; expected 'array' and 'layers'")
    for key in ("array", "layers"):
        if key not in data:
            raise ConfigError(f"{source}: plan is missing {key!r}")
    try:
        return PruningPlan.make(data["array"], data["layers"])
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
