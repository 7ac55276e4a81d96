"""ArrayConfig: what the accelerator is.  Presets ship as TOML; users pass their own TOML file.

``dataflow`` is "os" (the generated RTL and :mod:`hwprune.schedule`), or "ws"/"is": dense
weight-/input-stationary arrays that only the cost model knows (:mod:`hwprune.dataflow`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ArrayConfig", "EnergyTable", "load_array", "preset_names", "read_text", "index_bits",
           "DATAFLOWS"]

DATAFLOWS = ("os", "ws", "is")


def index_bits(group_size: int) -> int:
    """Bits of an index selecting one of ``group_size`` positions: ⌈log₂ M⌉ (0 when M = 1)."""
    return math.ceil(math.log2(group_size)) if group_size > 1 else 0


@dataclass(frozen=True, slots=True)
class EnergyTable:
    """Energy per operation and per byte moved, in picojoules."""

    mac: float = 0.3
    mux: float = 0.02
    reg_byte: float = 0.06
    sram_byte: float = 12.5
    dram_byte: float = 250.0


@dataclass(frozen=True, slots=True)
class ArrayConfig:
    """An output-stationary R×C systolic array that skips zero weights in N:M groups along K.

    ``group_size`` is M (the PE's activation-multiplexer width); ``slot_options`` are the N the
    controller can issue per group (N = M is dense).  Create with :meth:`from_dict` or
    :func:`load_array`; both validate and name the offending key.
    """

    name: str
    rows: int
    cols: int
    dataflow: str = "os"
    clock_mhz: float = 500.0
    group_size: int = 4
    slot_options: tuple[int, ...] = (1, 2, 4)
    group_skipping: bool = True
    weight_bits: int = 8
    act_bits: int = 8
    acc_bits: int = 32
    weight_sram_kib: float = 256
    act_sram_kib: float = 256
    out_sram_kib: float = 128
    sram_bytes_per_cycle: float = 128
    dram_bytes_per_cycle: float = 16
    energy: EnergyTable = field(default_factory=EnergyTable)
    #: Fold pipelining: the next fold's slots enter while the previous fold's results skew out
    #: (see :meth:`hwprune.schedule.Schedule.fold_interval`).  Off by default: SCALE-Sim's count.
    fold_overlap: bool = False
    #: Accept layers whose worst-case sum can exceed ``acc_bits`` (two's-complement wrapping, the
    #: hardware's documented behaviour); off, such layers are refused (:meth:`check_accumulator`).
    allow_accumulator_wrap: bool = False
    #: Two banks per memory: the host loads pass p + 1 (and stores pass p − 1's outputs) while the
    #: array computes pass p, each bank holding half the words (:mod:`hwprune.schedule`, passes).
    double_buffer: bool = True

    def __post_init__(self) -> None:
        # from_dict names TOML keys; this backstop catches direct construction and replace()
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"array name must be a non-empty string, not {self.name!r}")
        for key in ("rows", "cols", "group_size", "weight_bits", "act_bits", "acc_bits"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"array {self.name!r}: {key} must be a positive integer, not {value!r}")
        for key in ("clock_mhz", "weight_sram_kib", "act_sram_kib", "out_sram_kib",
                    "sram_bytes_per_cycle", "dram_bytes_per_cycle"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"array {self.name!r}: {key} must be a positive number, not {value!r}")
        if self.dataflow not in DATAFLOWS:
            raise ConfigError(f"array {self.name!r}: dataflow must be one of {DATAFLOWS}, not {self.dataflow!r}")
        slots = self.slot_options
        if not isinstance(slots, tuple) or not slots or any(
                isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.group_size for n in slots):
            raise ConfigError(f"array {self.name!r}: slot_options must be a non-empty tuple of N in "
                              f"1…{self.group_size}, not {slots!r}")
        if self.group_size not in slots:
            raise ConfigError(f"array {self.name!r}: slot_options {slots} must include the dense "
                              f"issue width {self.group_size}")
        if self.acc_bits < self.weight_bits + self.act_bits:
            raise ConfigError(f"array {self.name!r}: {self.acc_bits} accumulator bits cannot hold one "
                              f"{self.weight_bits}×{self.act_bits}-bit product")
        for key in ("group_skipping", "fold_overlap", "allow_accumulator_wrap", "double_buffer"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"array {self.name!r}: {key} must be true or false, not "
                                  f"{getattr(self, key)!r}")

    def accumulator_bits_needed(self, k: int) -> int:
        """Worst-case bits of a K-long sum of products: w_bits + a_bits + ⌈log₂ K⌉."""
        return self.weight_bits + self.act_bits + math.ceil(math.log2(k)) if k > 1 else \
            self.weight_bits + self.act_bits

    def check_accumulator(self, k: int, layer: str = "layer") -> None:
        """ConfigError naming K and the bits needed when a K-long sum can overflow the accumulator.

        Wrapping is the hardware's documented two's-complement behaviour, but it must be asked
        for: arrays with ``allow_accumulator_wrap = true`` pass.
        """
        need = self.accumulator_bits_needed(k)
        if need > self.acc_bits and not self.allow_accumulator_wrap:
            raise ConfigError(
                f"{layer}: K = {k} needs {need}-bit accumulation ({self.weight_bits} + "
                f"{self.act_bits} + ⌈log2 K⌉) but array {self.name!r} accumulates in {self.acc_bits} "
                "bits; use a wider accumulator or set allow_accumulator_wrap = true in the array TOML")

    @property
    def index_bits(self) -> int:
        """Bits of the per-weight index selecting one of ``group_size`` activations."""
        return index_bits(self.group_size)

    @property
    def nm_ratios(self) -> tuple[str, ...]:
        return tuple(f"{n}:{self.group_size}" for n in self.slot_options)

    def slots_for(self, n: int, m: int) -> int:
        """Issue width for an N:M pattern, or ConfigError naming what the array supports.

        An n:m pattern runs on a group size M = k·m when k·n is an issue width (1:2 → 2:4).
        """
        if n == m:
            return self.group_size
        if self.group_size % m == 0 and n * (self.group_size // m) in self.slot_options:
            return n * (self.group_size // m)
        raise ConfigError(f"array {self.name!r} supports N:M ratios {', '.join(self.nm_ratios)}, not {n}:{m}")

    def to_dict(self) -> dict[str, Any]:
        """The TOML structure :meth:`from_dict` reads (for ``--json`` and manifests)."""
        return {
            "name": self.name, "rows": self.rows, "cols": self.cols, "dataflow": self.dataflow,
            "clock_mhz": self.clock_mhz, "fold_overlap": self.fold_overlap,
            "allow_accumulator_wrap": self.allow_accumulator_wrap,
            "sparsity": {"m": self.group_size, "n": list(self.slot_options),
                         "group_skipping": self.group_skipping},
            "bits": {"weight": self.weight_bits, "activation": self.act_bits,
                     "accumulator": self.acc_bits},
            "memory": {"weight_sram_kib": self.weight_sram_kib, "act_sram_kib": self.act_sram_kib,
                       "out_sram_kib": self.out_sram_kib,
                       "sram_bytes_per_cycle": self.sram_bytes_per_cycle,
                       "dram_bytes_per_cycle": self.dram_bytes_per_cycle,
                       "double_buffer": self.double_buffer},
            "energy": asdict(self.energy),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ArrayConfig:
        """Build and validate from the TOML structure; errors name ``source``, key and value."""
        r = _Reader(data, source)
        r.reject_unknown({"name", "rows", "cols", "dataflow", "clock_mhz", "fold_overlap", "sparsity", "bits",
                          "allow_accumulator_wrap",
                          "memory", "energy"})
        name, rows, cols = r.str("name", source), r.int("rows"), r.int("cols")
        sp, bits, mem, en = r.table("sparsity"), r.table("bits"), r.table("memory"), r.table("energy")
        m = sp.int("m", 4)
        slots = tuple(sorted(set(sp.int_list("n", [1, 2, m] if m >= 2 else [1]))))
        for n in slots:
            if n > m:
                raise ConfigError(f"{sp.where('n')}: N must be ≤ M = {m}, not {n}")
        if m not in slots:
            slots = (*slots, m)  # dense always runs
        dataflow = r.str("dataflow", "os")
        if dataflow not in DATAFLOWS:
            raise ConfigError(f"{r.where('dataflow')}: supported dataflows are {DATAFLOWS}, not {dataflow!r}")
        wb, ab, accb = bits.int("weight", 8), bits.int("activation", 8), bits.int("accumulator", 32)
        if accb < wb + ab:
            raise ConfigError(f"{bits.where('accumulator')}: {accb} bits cannot hold one "
                              f"{wb}×{ab}-bit product; need at least {wb + ab}")
        for key, value in (("weight", wb), ("activation", ab), ("accumulator", accb)):
            if value > 64:
                raise ConfigError(f"{bits.where(key)}: at most 64 bits are supported, not {value}")
        defaults = EnergyTable()
        energy = EnergyTable(**{k: en.float(k, getattr(defaults, k), minimum=0.0)
                                for k in EnergyTable.__dataclass_fields__})
        cfg = cls(
            name=name, rows=rows, cols=cols, dataflow=dataflow,
            clock_mhz=r.float("clock_mhz", 500.0), group_size=m, slot_options=slots,
            group_skipping=sp.bool("group_skipping", True), weight_bits=wb, act_bits=ab, acc_bits=accb,
            weight_sram_kib=mem.float("weight_sram_kib", 256), act_sram_kib=mem.float("act_sram_kib", 256),
            out_sram_kib=mem.float("out_sram_kib", 128),
            sram_bytes_per_cycle=mem.float("sram_bytes_per_cycle", 128),
            dram_bytes_per_cycle=mem.float("dram_bytes_per_cycle", 16),
            double_buffer=mem.bool("double_buffer", True), energy=energy,
            fold_overlap=r.bool("fold_overlap", False),
            allow_accumulator_wrap=r.bool("allow_accumulator_wrap", False))
        sp.reject_unknown({"m", "n", "group_skipping"})
        bits.reject_unknown({"weight", "activation", "accumulator"})
        mem.reject_unknown({"weight_sram_kib", "act_sram_kib", "out_sram_kib", "sram_bytes_per_cycle",
                            "dram_bytes_per_cycle", "double_buffer"})
        en.reject_unknown(set(EnergyTable.__dataclass_fields__))
        return cfg

    def replace(self, **changes: Any) -> ArrayConfig:
        """A validated copy with some fields changed (e.g. ``rows=4, cols=4``)."""
        data = self.to_dict()
        flat_to_path = {"group_size": ("sparsity", "m"), "slot_options": ("sparsity", "n"),
                        "group_skipping": ("sparsity", "group_skipping"), "weight_bits": ("bits", "weight"),
                        "act_bits": ("bits", "activation"), "acc_bits": ("bits", "accumulator")}
        for key, value in changes.items():
            if key in flat_to_path:
                table, sub = flat_to_path[key]
                data[table][sub] = list(value) if isinstance(value, tuple) else value
            elif key in data and not isinstance(data[key], dict):
                data[key] = value
            elif key in data["memory"]:
                data["memory"][key] = value
            else:
                raise ConfigError(f"ArrayConfig has no field {key!r}")
        return ArrayConfig.from_dict(data, source=self.name)


class _Reader:
    """Typed access to one TOML table with errors that name the key and the value."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table, not {data!r}")
        self.data, self.prefix = data, where

    def where(self, key: str) -> str:
        return f"{self.prefix}: {key}"

    def table(self, key: str) -> _Reader:
        return _Reader(self.data.get(key, {}), f"{self.prefix}.{key}")

    def _get(self, key: str, default: Any) -> Any:
        if key not in self.data:
            if default is None:
                raise ConfigError(f"{self.where(key)} is missing")
            return default
        return self.data[key]

    def int(self, key: str, default: Any = None) -> int:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{self.where(key)} must be a positive integer, not {v!r}")
        return v

    def int_list(self, key: str, default: list[int]) -> list[int]:
        v = self._get(key, default)
        if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
            raise ConfigError(f"{self.where(key)} must be a non-empty list of positive integers, not {v!r}")
        return v

    def float(self, key: str, default: Any = None, *, minimum: float | None = None) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{self.where(key)} must be a number, not {v!r}")
        if (minimum is None and v <= 0) or (minimum is not None and v < minimum):
            raise ConfigError(f"{self.where(key)} must be {'positive' if minimum is None else f'≥ {minimum}'}, not {v!r}")
        return float(v)

    def str(self, key: str, default: Any = None) -> str:
        v = self._get(key, default)
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{self.where(key)} must be a non-empty string, not {v!r}")
        return v

    def bool(self, key: str, default: Any = None) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.where(key)} must be true or false, not {v!r}")
        return v

    def reject_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise ConfigError(f"{self.prefix}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a user's input file; ConfigError names the file when it is unreadable."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: {what} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None


def preset_names() -> list[str]:
    """Names of the array presets shipped with hwprune."""
    return sorted(p.name[:-5] for p in resources.files("hwprune.presets").iterdir() if p.name.endswith(".toml"))


def load_array(name_or_path: str | Path | ArrayConfig) -> ArrayConfig:
    """Load a preset by name (``os16x16``) or a user TOML file, validated."""
    if isinstance(name_or_path, ArrayConfig):
        return name_or_path
    text = str(name_or_path)
    if text in preset_names():
        raw = resources.files("hwprune.presets").joinpath(f"{text}.toml").read_text(encoding="utf-8")
        source = text
    else:
        path = Path(text)
        if not path.suffix == ".toml" or not path.is_file():
            raise ConfigError(f"unknown array {text!r}: not a preset ({', '.join(preset_names())}) "
                              "nor an existing .toml file")
        raw, source = read_text(path, "array TOML"), path.name
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return ArrayConfig.from_dict(data, source=source)
