"""Read SCALE-Sim topology CSVs (convolution and GEMM formats) as layers.

Shapes are derived exactly as SCALE-Sim 3 does (``scalesim/topology_utils.py``):

* Convolution rows ``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width,
  Channels, Num Filter, Strides[, Sparsity]``: no padding, one stride for both axes, and
  ``ofmap = ⌈(ifmap − filter + stride) / stride⌉``.  That ceiling counts a last, partial window
  when the stride does not divide ``ifmap − filter``; PyTorch's rule would not, so the
  :class:`~hwprune.ir.ConvGeometry` stores the IFMAP extended (bottom/right) to cover that window,
  ``filter + (ofmap − 1)·stride``, which makes M exactly SCALE-Sim's.
* A layer whose name contains ``DP`` (case-sensitive, as in SCALE-Sim) is depthwise: SCALE-Sim
  runs it as ``Channels`` layers of one channel and ``Num Filter`` filters each.  Here it is one
  layer with ``groups = Channels`` (in_channels = C, out_channels = C·Num Filter), which has
  identical GEMM dimensions per group and the same cost.
* GEMM rows ``Layer, M, N, K[, Sparsity]``: SCALE-Sim turns them into the convolution
  ``[name, M, K, 1, K, 1, N, 1]`` (IFMAP M×K, filter 1×K, one channel, N filters), so
  M = M, K = K, N = N.

``Sparsity`` is ``N:M``; ``n == m`` (SCALE-Sim's default ``1:1``) means dense.  SCALE-Sim drops
whatever follows the last comma of a row (rows end with ``,``; text after it is a comment, as
in ``...,1,#dw``); so does this reader, and it also accepts rows without the trailing comma.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..ir import ConvGeometry, LayerSpec
from ..patterns import NM, Dense, SparsityPattern

__all__ = ["from_scalesim_csv"]

_CONV_COLUMNS = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width",
                 "Channels", "Num Filter", "Strides")
_GEMM_COLUMNS = ("Layer", "M", "N", "K")


def from_scalesim_csv(path: str | os.PathLike) -> list[LayerSpec]:
    """Layers of a SCALE-Sim 3 topology file; the format is detected from the header.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, the header is neither format, or a row is
        malformed (the message names the file, the line number and the bad value).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such SCALE-Sim topology file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the SCALE-Sim topology: {exc}") from None

    lines = text.splitlines()
    header_no = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_no is None:
        raise ConfigError(f"{p}: empty SCALE-Sim topology file")
    header = [h.strip().lower() for h in _fields(lines[header_no])]
    if len(header) >= 4 and header[1:4] == ["m", "n", "k"]:
        parse, ncols = _gemm_row, 4
    elif len(header) >= 8 and header[1].startswith("ifmap"):
        parse, ncols = _conv_row, 8
    else:
        raise ConfigError(
            f"{p}:{header_no + 1}: header {lines[header_no].strip()!r} is neither SCALE-Sim "
            f"format; expected '{', '.join(_CONV_COLUMNS)}[, Sparsity],' or "
            f"'{', '.join(_GEMM_COLUMNS)}[, Sparsity],'")

    specs: list[LayerSpec] = []
    seen: set[str] = set()
    for no, line in enumerate(lines[header_no + 1:], start=header_no + 2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{p}:{no}"
        fields = [f.strip() for f in _fields(line)]
        if len(fields) not in (ncols, ncols + 1):
            raise ConfigError(f"{where}: expected {ncols} values (+ optional Sparsity), "
                              f"found {len(fields)} in {line.strip()!r}")
        if not fields[0]:
            raise ConfigError(f"{where}: empty layer name")
        if fields[0] in seen:
            raise ConfigError(f"{where}: duplicate layer name {fields[0]!r}")
        seen.add(fields[0])
        sparsity = _sparsity(where, fields[ncols]) if len(fields) > ncols else None
        try:
            specs.append(parse(where, fields[0], [_int(where, h, v) for h, v in
                                                  zip(_COLS[parse][1:], fields[1:ncols])],
                               sparsity))
        except ConfigError as exc:
            if str(exc).startswith(where):
                raise
            raise ConfigError(f"{where}: {exc}") from None
    return specs


def _fields(line: str) -> list[str]:
    """Split a row; drop what follows the last comma when it is empty or a ``#`` comment."""
    parts = line.split(",")
    if len(parts) > 1 and (not parts[-1].strip() or parts[-1].strip().startswith("#")):
        parts = parts[:-1]
    return parts


def _int(where: str, column: str, value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise ConfigError(f"{where}: {column} must be a positive integer, not {value!r}") from None
    if v < 1:
        raise ConfigError(f"{where}: {column} must be a positive integer, not {value!r}")
    return v


def _sparsity(where: str, value: str) -> SparsityPattern | None:
    if not value:
        return None
    parts = value.split(":")
    try:
        n, m = (int(x) for x in parts)
    except ValueError:
        raise ConfigError(f"{where}: Sparsity must be N:M such as 2:4, not {value!r}") from None
    if n < 1 or m < 1 or n > m:
        raise ConfigError(f"{where}: Sparsity must be N:M with 1 ≤ N ≤ M, not {value!r}")
    return Dense() if n == m else NM(n, m)


def _ofmap(ifmap: int, filt: int, stride: int) -> int:
    """SCALE-Sim's ⌈(ifmap − filt + stride) / stride⌉."""
    return -(-(ifmap - filt + stride) // stride)


def _conv_row(where: str, name: str, v: list[int], sparsity: SparsityPattern | None) -> LayerSpec:
    ifh, ifw, fh, fw, channels, filters, stride = v
    if fh > ifh or fw > ifw:
        raise ConfigError(f"{where}: filter {fh}×{fw} is larger than the IFMAP {ifh}×{ifw}")
    oh, ow = _ofmap(ifh, fh, stride), _ofmap(ifw, fw, stride)
    in_size = (fh + (oh - 1) * stride, fw + (ow - 1) * stride)
    groups = channels if "DP" in name else 1
    geom = ConvGeometry.make(in_channels=channels, out_channels=filters * groups, in_size=in_size,
                             kernel=(fh, fw), stride=stride, groups=groups)
    return LayerSpec.from_conv(name, geom, sparsity=sparsity)


def _gemm_row(where: str, name: str, v: list[int], sparsity: SparsityPattern | None) -> LayerSpec:
    m, n, k = v
    return LayerSpec.gemm(name, m, k, n, sparsity=sparsity)


_COLS = {_conv_row: _CONV_COLUMNS, _gemm_row: _GEMM_COLUMNS}
