"""The space file: which arrays, which models, which patterns a sweep evaluates.

::

    base = "os16x16"             # preset or TOML file: every array key not swept comes from it

    [array]                      # value sets; the design points are their product
    rows = [8, 16]
    cols = [8, 16]
    m = [4]                      # group size M
    n = [[1, 2, 4], [4]]         # N-sets the controller can issue (M is always added: dense runs)
    fold_overlap = [false, true]
    weight_sram_kib = [128, 256]
    act_sram_kib = [128, 256]
    out_sram_kib = [128]
    dataflow = ["os", "ws", "is"]

    patterns = ["dense", "2:4", "1:4"]   # every model, unless [models.NAME] says otherwise

    [models.resnet18]
    patterns = ["dense", "2:4"]

    [accuracy]
    finetune_epochs = 1          # short fine-tune per (model, pattern) for models that are tasks

WS and IS points ignore ``n`` and ``fold_overlap`` (they have neither; the duplicates they would
make are dropped).  Every design point is a validated :class:`~hwprune.config.ArrayConfig`, so a
bad value fails at load time with the key named.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ArrayConfig, load_array, read_text
from ..errors import ConfigError
from ..patterns import parse_pattern

__all__ = ["Space", "load_space", "design_id", "SWEPT_KEYS"]

#: array keys a space may sweep, with the ArrayConfig field each sets
SWEPT_KEYS = {"rows": "rows", "cols": "cols", "m": "group_size", "n": "slot_options",
              "fold_overlap": "fold_overlap", "weight_sram_kib": "weight_sram_kib",
              "act_sram_kib": "act_sram_kib", "out_sram_kib": "out_sram_kib", "dataflow": "dataflow",
              "clock_mhz": "clock_mhz", "dram_bytes_per_cycle": "dram_bytes_per_cycle"}


def design_id(array: ArrayConfig) -> str:
    """Hash of everything that defines a design point (not its name)."""
    data = array.to_dict()
    data.pop("name")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Space:
    """Design points × per-model patterns (and the fine-tune budget for accuracy)."""

    designs: tuple[ArrayConfig, ...]
    patterns: dict[str, tuple[str, ...]]   # model → pattern texts
    finetune_epochs: int = 1
    search_budgets: dict[str, tuple[float, ...]] | None = None

    def for_models(self, models: list[str]) -> Space:
        """The space restricted to (and completed for) the models named on the command line."""
        default = self.patterns.get("*", ("dense",))
        return Space(self.designs, {m: self.patterns.get(m, default) for m in models}, self.finetune_epochs,
                     self.search_budgets)


def _values(where: str, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: [array] {key} must be a non-empty list of values, not {value!r}")
    return value


def load_space(path: str | Path) -> Space:
    """Read and validate a space file (module docstring); errors name the file, key and value."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"space file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(read_text(p, "space file"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p.name}: not valid TOML: {exc}") from None
    return space_from_dict(data, source=p.name)


def space_from_dict(data: dict[str, Any], *, source: str = "space") -> Space:
    """:func:`load_space` on an already parsed TOML structure."""
    unknown = sorted(set(data) - {"base", "array", "patterns", "models", "accuracy"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: accuracy, array, base, models, patterns)")
    base = load_array(data.get("base", "os16x16"))
    grid = data.get("array", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{source}: [array] must be a table, not {grid!r}")
    bad = sorted(set(grid) - set(SWEPT_KEYS))
    if bad:
        raise ConfigError(f"{source}: [array] unknown key {bad[0]!r} (sweepable: {', '.join(SWEPT_KEYS)})")
    keys = list(grid)
    sets = [_values(source, k, grid[k]) for k in keys]
    designs: dict[str, ArrayConfig] = {}
    for combo in itertools.product(*sets):
        changes = {SWEPT_KEYS[k]: (tuple(v) if isinstance(v, list) else v) for k, v in zip(keys, combo)}
        if changes.get("dataflow", base.dataflow) != "os":
            m = changes.get("group_size", base.group_size)
            changes.update(slot_options=(m,), fold_overlap=False)
        try:
            cfg = base.replace(**changes)
        except ConfigError as exc:
            raise ConfigError(f"{source}: [array] {exc}") from None
        cfg = cfg.replace(name=_name(cfg))
        designs.setdefault(design_id(cfg), cfg)
    patterns = {"*": _patterns(source, "patterns", data.get("patterns", ["dense"]))}
    budgets: dict[str, tuple[float, ...]] = {}
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: [models] must be a table of model names, not {models!r}")
    for name, spec in models.items():
        if not isinstance(spec, dict) or set(spec) - {"patterns", "search"}:
            raise ConfigError(f"{source}: [models.{name}] takes patterns = [...] and search = {{budgets = [...]}}, "
                              f"not {spec!r}")
        if "patterns" in spec:
            patterns[name] = _patterns(source, f"models.{name}.patterns", spec["patterns"])
        if "search" in spec:
            b = spec["search"].get("budgets") if isinstance(spec["search"], dict) else None
            if not isinstance(b, list) or not b or not all(isinstance(x, (int, float)) and 0 < x <= 1 for x in b):
                raise ConfigError(f"{source}: models.{name}.search.budgets must be fractions of dense cycles "
                                  f"in (0, 1], not {b!r}")
            budgets[name] = tuple(float(x) for x in b)
    acc = data.get("accuracy", {})
    epochs = acc.get("finetune_epochs", 1) if isinstance(acc, dict) else None
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"{source}: accuracy.finetune_epochs must be an integer ≥ 0, not {epochs!r}")
    return Space(tuple(designs.values()), patterns, epochs, budgets or None)


def _patterns(source: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {key} must be a non-empty list of pattern strings, not {value!r}")
    for v in value:
        try:
            parse_pattern(v)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
    return tuple(value)


def _name(cfg: ArrayConfig) -> str:
    n = "".join(map(str, cfg.slot_options)) if cfg.dataflow == "os" else "d"
    return (f"{cfg.dataflow}{cfg.rows}x{cfg.cols}m{cfg.group_size}n{n}{'p' if cfg.fold_overlap else ''}"
            f"-w{cfg.weight_sram_kib:g}a{cfg.act_sram_kib:g}o{cfg.out_sram_kib:g}")
