"""An export directory: memory images of every layer in every format, ONNX files, and a manifest.

Layout of ``DIR``::

    manifest.json                 schema, tool version, array config and its hash, the quantized
                                  model's scales, every layer's GEMM and design, every file
    model.onnx, model_qdq.onnx    (formats ``onnx``, ``qdq``)
    <layer>/<memory>.<fmt>        memories of :data:`hwprune.images.MEMORIES` for a test batch:
                                  weights (N:M values + indices in schedule order), stream,
                                  acts (the im2col'd int8 inputs), desc, outputs (the int32
                                  accumulators the array must write — the integer reference's)

Words come from the one layout, :func:`hwprune.images.build_images`, and are written by the
:data:`~hwprune.images.IMAGE_FORMATS` writers.  :func:`load_export` checks everything a consumer
relies on — schema, sha256 of every file, word counts and widths against the memory map of the
recorded array, the layer's pattern — then *decodes* the weights and activations back to
integers (:func:`decode_weights`, :func:`decode_acts`) and rebuilds the images from them: a file
that is not exactly what the layout gives for its own contents raises :class:`ExportError`.
Finally it rebuilds the int8 model from the manifest's scales and the decoded weights
(:meth:`QuantModel.from_dict`) and checks that each layer's activations are the previous layer's
expected outputs, requantized: the images of consecutive layers form one integer forward pass.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ArrayConfig
from ..errors import ConfigError, ExportError, HwPruneError, VerificationError
from ..images import (
    IMAGE_FORMATS,
    MEMORIES,
    LayerImages,
    MemoryMap,
    _column_channels,
    build_images,
    memory_map,
)
from ..io import write_text
from ..ir import LayerSpec
from ..patterns import NM, SparsityPattern, parse_pattern
from ..quant.model import LayerRun, QuantModel

__all__ = ["SCHEMA", "SCHEMA_VERSION", "IMAGE_FORMAT_NAMES", "ONNX_FORMATS", "ALL_FORMATS", "FileRecord",
           "LoadedLayer", "LoadedExport", "ExportResult", "export_model", "export_images", "write_manifest",
           "load_export", "largest_batch", "decode_weights", "decode_acts", "array_hash", "sha256_of"]

SCHEMA = "hwprune-export"
SCHEMA_VERSION = 1
IMAGE_FORMAT_NAMES = tuple(IMAGE_FORMATS)
ONNX_FORMATS = {"onnx": "model.onnx", "qdq": "model_qdq.onnx"}


def sha256_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def array_hash(array: ArrayConfig) -> str:
    """sha256 of the array config's canonical JSON (what the design depends on)."""
    return hashlib.sha256(json.dumps(array.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One written file as the manifest lists it."""

    path: str                      # relative to the export directory
    format: str
    layer: str | None
    memory: str | None
    word_width: int | None
    depth: int | None              # words in the file
    scales: object
    zero_points: object
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _scales(run_layer: LayerRun, q: QuantModel, memory: str) -> tuple[object, object]:
    layer = q.layer(run_layer.name)
    if memory == "weights":
        return layer.weight_scale.tolist(), 0
    if memory == "acts":
        return layer.input_scale, 0
    if memory == "outputs":
        return layer.accumulator_scale.tolist(), 0
    return None, None


def _safe_dir(name: str) -> str:
    bad = set('/\\:*?"<>|') | {"\0"}
    if name in ("", ".", "..") or any(c in bad for c in name):
        raise ExportError(f"layer name {name!r} cannot name a directory")
    return name


def export_images(q: QuantModel, x: torch.Tensor | np.ndarray, array: ArrayConfig, out_dir: str | os.PathLike,
                  *, formats: Sequence[str] = IMAGE_FORMAT_NAMES, force: bool = False
                  ) -> tuple[list[FileRecord], list[dict[str, object]]]:
    """Run the integer reference on the float batch ``x`` and write every layer's memory images.

    Returns the file records and the per-layer manifest entries.

    Raises
    ------
    UnsupportedLayerError
        A layer does not fit the array's memories (use a smaller batch or a larger array).
    VerificationError
        The image's expected outputs differ from the integer reference (never, by design).
    """
    unknown = [f for f in formats if f not in IMAGE_FORMATS]
    if unknown:
        raise ExportError(f"unknown image format {unknown[0]!r} (known: {', '.join(IMAGE_FORMATS)})")
    x_int = q.quantize_input(x) if not (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer)) else x
    run = q.run(x_int)
    out = Path(out_dir)
    files, layers = [], []
    for lr in run.layers:
        images = build_images(lr.spec, lr.weights, lr.acts, array, lr.pattern)
        if not np.array_equal(images.expected, lr.acc):
            raise VerificationError(f"{lr.name}: image outputs differ from the integer reference")
        sub = _safe_dir(lr.name)
        for fmt in formats:
            suffix, writer, _ = IMAGE_FORMATS[fmt]
            for mem in MEMORIES:
                rel = f"{sub}/{mem}{suffix}"
                path = writer(out / rel, images.words[mem], images.map[mem], force=force)
                scales, zps = _scales(lr, q, mem)
                files.append(FileRecord(rel, fmt, lr.name, mem, images.map[mem].width,
                                        len(images.words[mem]), scales, zps, sha256_of(path),
                                        path.stat().st_size))
        layers.append(_layer_entry(lr, images))
    return files, layers


def _layer_entry(lr: LayerRun, images: LayerImages) -> dict[str, object]:
    sched = images.schedule
    return {"name": lr.name, "kind": str(lr.spec.kind), "M": lr.spec.M, "K": lr.spec.K, "N": lr.spec.N,
            "groups": lr.spec.groups, "pattern": str(lr.pattern) if lr.pattern is not None else None,
            "slots": images.map.slots, "group_size": images.map.group_size, "folds": images.folds,
            "row_tiles": sched.row_tiles, "col_tiles": sched.col_tiles, "n_out": sched.n_out,
            # the layout's own column → channel map (−1: padding), which decoding reads back
            "columns": _column_channels(sched, lr.spec.n_per_group, images.map.cols).tolist(),
            "words": {m: len(images.words[m]) for m in MEMORIES}, "map": images.map.to_dict()}


def onnx_record(path: Path, fmt: str, root: Path) -> FileRecord:
    return FileRecord(str(path.relative_to(root)), fmt, None, None, None, None, None, None,
                      sha256_of(path), path.stat().st_size)


def write_manifest(out_dir: str | os.PathLike, *, array: ArrayConfig, q: QuantModel, batch: int,
                   files: Sequence[FileRecord], layers: Sequence[Mapping[str, object]],
                   source: str | None = None, force: bool = False) -> Path:
    """Write ``manifest.json`` (last, atomically: a directory without it is not an export)."""
    from .. import __version__

    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "tool": "hwprune",
                "tool_version": __version__, "source": source, "array": array.to_dict(),
                "array_hash": array_hash(array), "batch": batch, "quant": q.to_dict(),
                "layers": list(layers), "files": [f.to_dict() for f in files]}
    return write_text(Path(out_dir) / "manifest.json", json.dumps(manifest, indent=1) + "\n", force=force)


# -- decoding ----------------------------------------------------------------------------------

def _fields(words: list[int], mm: MemoryMap, name: str) -> np.ndarray:
    return mm[name].unpack(words).astype(np.int64)


def decode_weights(words: Mapping[str, list[int]], mm: MemoryMap, layer: Mapping[str, object]) -> np.ndarray:
    """The N×K integer weights held by a layer's ``weights``/``stream``/``desc`` words.

    Walks the folds in schedule order (conv group, column tile, row tile); each descriptor gives
    the weight tile's base and K′; a slot's stream word gives its K group (K position when dense)
    and each column's index the position inside the group.  ``layer`` is the manifest entry
    (dims, tiles, and ``columns``: the layout's column → channel map, −1 for padding).
    """
    N, K, groups = int(layer["N"]), int(layer["K"]), int(layer["groups"])
    npg = N // groups
    C, Mg = mm.cols, mm.group_size
    col_tiles, row_tiles = int(layer["col_tiles"]), int(layer["row_tiles"])
    columns = np.asarray(layer["columns"], dtype=np.int64).reshape(groups, -1)
    if columns.shape[1] != col_tiles * C or columns.max(initial=-1) >= npg:
        raise ExportError(f"{layer['name']}: the column map does not fit {col_tiles} tiles of {C} "
                          f"columns and {npg} channels")
    desc = _fields(words["desc"], mm, "desc")[:, 0, :]
    stream = _fields(words["stream"], mm, "stream")[:, 0, 0]
    wv = _fields(words["weights"], mm, "weights")          # (slots, C, (value, index))
    if len(desc) != groups * col_tiles * row_tiles:
        raise ExportError(f"{layer['name']}: {len(desc)} fold descriptors, the layer has "
                          f"{groups * col_tiles * row_tiles} folds")
    w = np.zeros((N, K), dtype=np.int64)
    f = 0
    for g in range(groups):
        for tc in range(col_tiles):
            chans = columns[g, tc * C: tc * C + C]
            base, kp = int(desc[f, 0]), int(desc[f, 1])
            if base + kp > len(stream) or base + kp > len(wv):
                raise ExportError(f"{layer['name']}: fold {f} reads slots {base}..{base + kp} beyond "
                                  f"the {min(len(stream), len(wv))} written")
            for s in range(base, base + kp):
                pos = stream[s] if mm.dense else stream[s] * Mg + wv[s, :, 1]
                pos = np.broadcast_to(pos, (C,))
                live = (chans >= 0) & (wv[s, :, 0] != 0)
                if np.any(pos[live] >= K):
                    raise ExportError(f"{layer['name']}: slot {s} addresses K position ≥ {K}")
                w[g * npg + chans[live], pos[live]] = wv[s, live, 0]
            f += row_tiles
    return w


def decode_acts(words: list[int], mm: MemoryMap, layer: Mapping[str, object]) -> np.ndarray:
    """The (groups, M, K) int8 activations held by a layer's ``acts`` words (padding dropped)."""
    M, K, groups = int(layer["M"]), int(layer["K"]), int(layer["groups"])
    R, Mg = mm.rows, mm.group_size
    rt = int(layer["row_tiles"])
    kg = -(-K // Mg)
    a = _fields(words, mm, "acts")[:, :, 0]
    if mm.dense:
        need = groups * rt * K
        if len(a) < need:
            raise ExportError(f"{layer['name']}: {len(a)} activation words, the layer needs {need}")
        x = a[:need].reshape(groups, rt, K, R).transpose(0, 1, 3, 2).reshape(groups, rt * R, K)
    else:
        need = groups * rt * kg
        if len(a) < need:
            raise ExportError(f"{layer['name']}: {len(a)} activation words, the layer needs {need}")
        x = a[:need].reshape(groups, rt, kg, R, Mg).transpose(0, 1, 3, 2, 4).reshape(groups, rt * R, kg * Mg)
    return x[:, :M, :K]


# -- loading and verification ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadedLayer:
    """One layer read back: the decoded integers and the images rebuilt from them."""

    name: str
    spec: LayerSpec
    pattern: SparsityPattern | None
    weights: np.ndarray
    acts: np.ndarray
    expected: np.ndarray
    images: LayerImages


@dataclass(frozen=True, slots=True)
class LoadedExport:
    """A verified export directory."""

    root: Path
    manifest: Mapping[str, object]
    array: ArrayConfig
    layers: tuple[LoadedLayer, ...]
    files_checked: int
    qmodel: QuantModel | None = None    # the int8 model: manifest scales + decoded weights


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not root.is_dir():
        raise ExportError(f"{root}: no such export directory")
    if not path.is_file():
        raise ExportError(f"{path}: missing manifest")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        raise ExportError(f"{path}: not an hwprune export manifest (schema {m.get('schema') if isinstance(m, dict) else None!r})")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ExportError(f"{path}: schema version {m.get('schema_version')!r} is not supported "
                          f"(this hwprune reads {SCHEMA_VERSION})")
    for key in ("array", "array_hash", "layers", "files"):
        if key not in m:
            raise ExportError(f"{path}: manifest has no {key!r}")
    return m


def _check_file(root: Path, rec: Mapping[str, object]) -> Path:
    rel = str(rec.get("path", ""))
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise ExportError(f"manifest path {rel!r} leaves the export directory")
    if not path.is_file():
        raise ExportError(f"{root / rel}: missing file listed in the manifest")
    digest = sha256_of(path)
    if digest != rec.get("sha256"):
        raise ExportError(f"{root / rel}: sha256 {digest[:12]}… does not match the manifest's "
                          f"{str(rec.get('sha256'))[:12]}… (corrupted or truncated)")
    return path


def load_export(out_dir: str | os.PathLike) -> LoadedExport:
    """Read and verify an export directory written by :func:`export_images` + :func:`write_manifest`.

    Raises
    ------
    ExportError
        One line naming the first problem: manifest schema, array hash, a missing or corrupted
        file (sha256), a word count or width that disagrees with the memory map, a pattern the
        decoded weights violate, or words that are not what the layout gives for their contents.
    """
    root = Path(out_dir)
    m = _manifest(root)
    try:
        array = ArrayConfig.from_dict(m["array"], source="manifest array")
    except HwPruneError as exc:
        raise ExportError(f"{root / 'manifest.json'}: bad array config: {exc}") from None
    if array_hash(array) != m["array_hash"]:
        raise ExportError(f"{root / 'manifest.json'}: array hash does not match its array config")
    by_layer: dict[str, dict[str, dict[str, Mapping[str, object]]]] = {}
    for rec in m["files"]:
        _check_file(root, rec)
        if rec.get("memory") is not None:
            by_layer.setdefault(rec["layer"], {}).setdefault(rec["format"], {})[rec["memory"]] = rec
    layers = tuple(_load_layer(root, array, entry, by_layer.get(entry["name"], {})) for entry in m["layers"])
    qmodel = _chain(root, m, layers) if layers else None
    return LoadedExport(root, m, array, layers, len(m["files"]), qmodel)


def _chain(root: Path, m: Mapping[str, object], layers: tuple[LoadedLayer, ...]) -> QuantModel:
    """The int8 model from the manifest's scales and the decoded weights, and the check that the
    layers chain: each layer's activations are the previous layer's outputs, requantized."""
    where = root / "manifest.json"
    try:
        q = QuantModel.from_dict(m["quant"], {lay.name: lay.weights for lay in layers})
    except (ConfigError, KeyError) as exc:
        raise ExportError(f"{where}: {exc}") from None
    if [lay.name for lay in q.layers] != [lay.name for lay in layers]:
        raise ExportError(f"{where}: the quantized model's layers are not the imaged layers")
    batch = int(m.get("batch", 0))
    for lay, nxt in itertools.pairwise(layers):
        try:
            name, acts = q.next_activations(lay.name, lay.expected, batch)
        except (HwPruneError, ValueError) as exc:
            raise ExportError(f"{lay.name}: its outputs do not chain to {nxt.name}: {exc}") from None
        if name != nxt.name or not np.array_equal(acts, nxt.acts):
            raise ExportError(f"{nxt.name}: its activations are not {lay.name}'s outputs requantized "
                              "with the manifest's scales")
    return q


def _load_layer(root: Path, array: ArrayConfig, entry: Mapping[str, object],
                files: Mapping[str, Mapping[str, Mapping[str, object]]]) -> LoadedLayer:
    name = str(entry["name"])
    if not files:
        raise ExportError(f"{name}: the manifest lists no image files for this layer")
    pattern = parse_pattern(entry["pattern"]) if entry.get("pattern") else None
    slots = int(entry["slots"])
    if isinstance(pattern, NM) and array.slots_for(pattern.n, pattern.m) != slots:
        raise ExportError(f"{name}: pattern {pattern} issues {array.slots_for(pattern.n, pattern.m)} "
                          f"slots on this array, the manifest says {slots}")
    try:
        mm = memory_map(array, slots)
    except ConfigError as exc:
        raise ExportError(f"{name}: {exc}") from None
    if mm.to_dict() != entry.get("map"):
        raise ExportError(f"{name}: the manifest's memory map differs from the array's")
    decoded = None
    for fmt, recs in files.items():
        words = {}
        for mem in MEMORIES:
            rec = recs.get(mem)
            if rec is None:
                raise ExportError(f"{name}: no {mem} image in format {fmt}")
            if rec.get("word_width") != mm[mem].width:
                raise ExportError(f"{root / rec['path']}: word width {rec.get('word_width')} in the "
                                  f"manifest, the memory is {mm[mem].width} bits")
            _, _, reader = IMAGE_FORMATS[fmt]
            words[mem] = reader(root / str(rec["path"]), mm[mem])
            if len(words[mem]) != rec.get("depth") or len(words[mem]) != entry["words"][mem]:
                raise ExportError(f"{root / rec['path']}: {len(words[mem])} words, the manifest says "
                                  f"{rec.get('depth')}")
            if len(words[mem]) > mm[mem].depth:
                raise ExportError(f"{root / rec['path']}: {len(words[mem])} words exceed the memory "
                                  f"depth {mm[mem].depth}")
        if decoded is None:
            decoded = _rebuild(name, array, entry, pattern, mm, words)
        elif any(words[mem] != decoded.images.words[mem] for mem in MEMORIES):
            raise ExportError(f"{name}: the {fmt} images hold other words than the first format's")
    return decoded


def _spec(entry: Mapping[str, object], pattern: SparsityPattern | None) -> LayerSpec:
    from ..ir import LayerKind

    try:
        return LayerSpec(str(entry["name"]), LayerKind(entry["kind"]), int(entry["M"]), int(entry["K"]),
                         int(entry["N"]), int(entry["groups"]), sparsity=pattern)
    except (HwPruneError, ValueError, KeyError) as exc:
        raise ExportError(f"{entry.get('name')}: bad layer entry in the manifest: {exc}") from None


def _rebuild(name: str, array: ArrayConfig, entry: Mapping[str, object], pattern: SparsityPattern | None,
             mm: MemoryMap, words: Mapping[str, list[int]]) -> LoadedLayer:
    spec = _spec(entry, pattern)
    w = decode_weights(words, mm, entry)
    x = decode_acts(words["acts"], mm, entry)
    if isinstance(pattern, NM):
        gs = array.group_size
        pad = (-spec.K) % gs
        occ = int(np.pad(w != 0, ((0, 0), (0, pad))).reshape(spec.N, -1, gs).sum(axis=2).max(initial=0))
        if occ > mm.slots:
            raise ExportError(f"{name}: decoded weights hold {occ} non-zeros in a group of {gs}, "
                              f"pattern {pattern} allows {mm.slots}")
    try:
        images = build_images(spec, w, x, array, pattern)
    except HwPruneError as exc:
        raise ExportError(f"{name}: the decoded layer does not lay out: {exc}") from None
    if images.map.slots != mm.slots:
        raise ExportError(f"{name}: the decoded weights need {images.map.slots} slots, the images "
                          f"were written for {mm.slots}")
    for mem in MEMORIES:
        if images.words[mem] != words[mem]:
            first = next((i for i, (a, b) in enumerate(zip(images.words[mem], words[mem])) if a != b),
                         min(len(images.words[mem]), len(words[mem])))
            raise ExportError(f"{name}: {mem} word {first} is not what the layout gives for the "
                              "decoded weights and activations")
    return LoadedLayer(name, spec, pattern, w, x, images.expected, images)


# -- the whole export --------------------------------------------------------------------------

#: every format ``export_model`` writes by default
ALL_FORMATS = (*ONNX_FORMATS, *IMAGE_FORMATS)


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What :func:`export_model` wrote: the files (manifest last) and the quantized model."""

    root: Path
    files: tuple[FileRecord, ...]
    manifest: Path
    qmodel: QuantModel


def export_model(model: torch.nn.Module, qmodel: QuantModel, batch: torch.Tensor, array: ArrayConfig,
                 out_dir: str | os.PathLike, *, formats: Sequence[str] = ALL_FORMATS,
                 patterns: Mapping[str, SparsityPattern] | None = None, source: str | None = None,
                 force: bool = False) -> ExportResult:
    """Write the ONNX files and memory images of a quantized model, then the manifest.

    ``batch`` (float inputs) is the test batch whose activations and expected outputs the images
    hold.  Everything is written into a temporary directory beside ``out_dir`` and renamed onto
    it at the end, so a failure (a layer too large for the memories, an exporter error) leaves
    nothing behind.  An existing ``out_dir`` is refused unless ``force``, then replaced whole.
    """
    from .onnx import export_float_onnx, export_qdq_onnx

    _check_chain(qmodel)
    fmts = list(dict.fromkeys(formats))
    unknown = [f for f in fmts if f not in ALL_FORMATS]
    if unknown or not fmts:
        raise ExportError(f"unknown export format {unknown[0] if unknown else '(none)'!r} "
                          f"(known: {', '.join(ALL_FORMATS)})")
    root = Path(out_dir)
    if root.exists() and not force:
        raise ExportError(f"{root} exists; pass --force (force=True) to overwrite it")
    if root.exists() and not root.is_dir():
        raise ExportError(f"{root} is a file, not a directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        files: list[FileRecord] = []
        image_fmts = [f for f in fmts if f in IMAGE_FORMATS]
        layers: list[dict[str, object]] = []
        if image_fmts:   # first: the layers that do not fit the memories fail before any ONNX work
            recs, layers = export_images(qmodel, batch, array, tmp, formats=image_fmts)
            files += recs
        if "onnx" in fmts:
            p = export_float_onnx(model, (batch[:1],), tmp / ONNX_FORMATS["onnx"], patterns=patterns,
                                  group_size=array.group_size)
            files.append(onnx_record(p, "onnx", tmp))
        if "qdq" in fmts:
            p = export_qdq_onnx(qmodel, tmp / ONNX_FORMATS["qdq"], group_size=array.group_size)
            files.append(onnx_record(p, "qdq", tmp))
        write_manifest(tmp, array=array, q=qmodel, batch=int(batch.shape[0]), files=files,
                       layers=layers, source=source)
        _replace_dir(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(root, tuple(files), root / "manifest.json", qmodel)


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``; an existing ``target`` is moved aside first, then removed."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_chain(q: object) -> None:
    """The bundle (images, manifest, QDQ) describes conv/linear chains; refuse anything else by name."""
    from ..errors import UnsupportedLayerError

    if not isinstance(q, QuantModel):
        raise UnsupportedLayerError(f"export writes conv/linear chains (QuantModel), not a {type(q).__name__}: "
                                    "a Transformer's int8 model has no image bundle or QDQ file yet "
                                    "(its integer reference runs on the RTL with `hwprune sim CKPT --model-run`)")


def largest_batch(q: QuantModel, array: ArrayConfig, upto: int) -> int:
    """The largest test batch ≤ ``upto`` whose every layer fits the array's memories.

    Raises
    ------
    UnsupportedLayerError
        Not even one example fits (the message names the layer and the SRAM).
    """
    from ..errors import UnsupportedLayerError

    _check_chain(q)
    shape = (1, *q.input_shape)
    error: UnsupportedLayerError | None = None
    for b in range(upto, 0, -1):
        run = q.run(np.zeros((b, *shape[1:]), dtype=np.int64))
        try:
            for lr in run.layers:
                build_images(lr.spec, lr.weights, lr.acts, array, lr.pattern)
        except UnsupportedLayerError as exc:
            error = exc
            continue
        return b
    raise error
