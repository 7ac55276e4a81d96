"""``hwprune export``: ONNX (float, QDQ) and memory images of a pruned checkpoint; ``--verify DIR``."""

from __future__ import annotations

import argparse
import json

from ..config import preset_names
from .args import add_data_argument
from .helptext import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a pruned checkpoint: ONNX float/QDQ int8 and FPGA memory images",
        description="Quantize a checkpoint saved by `hwprune prune` to int8 (per-channel weights,\n"
                    "calibrated activations, integer requantization), then write into DIR:\n"
                    "  model.onnx, model_qdq.onnx   the pruned float model and the QDQ int8 model\n"
                    "  LAYER/MEMORY.{hex,coe,mif,bin} the array's memory images per layer: N:M weights\n"
                    "                               and indices in schedule order, schedule stream,\n"
                    "                               fold descriptors, a test batch's activations and\n"
                    "                               the int32 outputs the array must produce\n"
                    "  manifest.json                array config + hash, scales, sha256 of every file\n"
                    "`hwprune export --verify DIR` re-checks a directory against its manifest.",
        epilog="examples:\n"
               "  hwprune prune digits_cnn --pattern 2:4 --out cnn24.pt\n"
               "  hwprune export cnn24.pt --array os16x16 --out cnn24_export/\n"
               "  hwprune export cnn24.pt --array os8x8 --out img/ --formats hex,coe --batch 4 --force\n"
               "  hwprune export --verify cnn24_export/",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", metavar="CKPT", help="checkpoint written by hwprune prune")
    p.add_argument("--array", metavar="PRESET|FILE.toml",
                   help=f"array the images are laid out for ({', '.join(preset_names())} or TOML)")
    p.add_argument("--out", metavar="DIR", help="output directory (refused if it exists, unless --force)")
    p.add_argument("--formats", default=None,
                   help="comma-separated subset of %(formats)s (default: all)")
    p.add_argument("--calib", type=int, default=256, metavar="N",
                   help="calibration examples from the checkpoint's task or --data (default 256)")
    add_data_argument(p, "calibration batches come from train and the test batch from test "
                         "(else val); default: the checkpoint's built-in task")
    p.add_argument("--calibration", choices=("percentile", "minmax"), default="percentile",
                   help="activation range: percentile (99.99 %% of |x|, default) or minmax")
    p.add_argument("--qat-epochs", type=int, default=0, metavar="E",
                   help="straight-through quantization-aware fine-tuning epochs after calibration "
                        "(default 0: post-training quantization only)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="test-batch examples held by the activation/output images (default: the "
                        "most, up to 8, that fit the array's memories)")
    p.add_argument("--verify", metavar="DIR", help="re-check an export directory against its manifest")
    p.add_argument("--force", action="store_true", help="write into an existing DIR, replacing files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _verify(args: argparse.Namespace) -> int:
    from ..export import load_export

    loaded = load_export(args.verify)
    info = {"dir": str(loaded.root), "ok": True, "files": loaded.files_checked,
            "layers": [{"name": lay.name, "pattern": str(lay.pattern) if lay.pattern else None,
                        "M": lay.spec.M, "K": lay.spec.K, "N": lay.spec.N,
                        "nonzero_weights": int((lay.weights != 0).sum())} for lay in loaded.layers]}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        from rich.console import Console

        Console().print(f"[green]ok[/green] {loaded.root}: {loaded.files_checked} files match the manifest; "
                        f"{len(loaded.layers)} layers decode and re-encode to the same words")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.verify:
        if args.checkpoint or args.out:
            raise ConfigError("--verify DIR takes no checkpoint or --out")
        return _verify(args)
    if not args.checkpoint or not args.array or not args.out:
        raise ConfigError("export needs CKPT, --array and --out (or --verify DIR)")
    from pathlib import Path

    from ..checkpoint import load_checkpoint
    from ..config import load_array
    from ..errors import ExportError
    from ..export import ALL_FORMATS, export_model, largest_batch
    from ..quant import qat_quantize, quantize
    from ..usermodel import checkpoint_workload
    from ..workload import first_examples

    formats = list(ALL_FORMATS) if args.formats is None else [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ALL_FORMATS]
    if bad or not formats:
        raise ConfigError(f"--formats: unknown format {bad[0] if bad else '(none)'!r} (known: {','.join(ALL_FORMATS)})")
    for name, value in (("--calib", args.calib), ("--batch", 1 if args.batch is None else args.batch)):
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value}")
    if args.qat_epochs < 0:
        raise ConfigError(f"--qat-epochs must be 0 or more, not {args.qat_epochs}")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ExportError(f"{out} exists; pass --force to overwrite it")
    array = load_array(args.array)
    ckpt = load_checkpoint(args.checkpoint)
    task = checkpoint_workload(ckpt, args.checkpoint, args.data)
    if args.qat_epochs:
        q = qat_quantize(ckpt.model, task, epochs=args.qat_epochs, calib=args.calib,
                         calibration=args.calibration, array=array, patterns=ckpt.patterns)
    else:
        q = quantize(ckpt.model, task, calib=args.calib, calibration=args.calibration, array=array,
                     patterns=ckpt.patterns)
    size = args.batch if args.batch is not None else largest_batch(q, array, 8)
    batch = first_examples(task, size)[0]
    result = export_model(ckpt.model, q, batch, array, out, formats=formats, patterns=ckpt.patterns,
                          source=str(args.checkpoint), force=args.force)
    rows = _rows(result, array)
    if args.json:
        print(json.dumps({"out": str(out), "manifest": str(result.manifest), "array": array.name,
                          "files": [r.to_dict() for r in result.files], "summary": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.checkpoint} → {out} ({array.name}, batch {batch.shape[0]})")
    for col in ("layer", "files", "bytes", "weights (int8 values+indices)", "vs dense int8"):
        table.add_column(col, justify="right" if col not in ("layer",) else "left")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "—"
        table.add_row(r["layer"], str(r["files"]), f"{r['bytes']:,}",
                      f"{r['weight_bytes']:,}" if r["weight_bytes"] is not None else "—", ratio)
    Console().print(table)
    Console().print(f"wrote {len(result.files) + 1} files · verify with: hwprune export --verify {out}")
    return 0


def _rows(result: object, array: object) -> list[dict[str, object]]:
    """Per layer (and ONNX file): files, bytes, and the compressed weight bytes vs dense int8."""
    from ..export.sizes import layer_weight_bytes

    sizes = {s["layer"]: s for s in layer_weight_bytes(result.qmodel, array)}
    rows: dict[str, dict[str, object]] = {}
    for f in result.files:
        key = f.layer or f.path
        row = rows.setdefault(key, {"layer": key, "files": 0, "bytes": 0, "weight_bytes": None, "ratio": None})
        row["files"] += 1
        row["bytes"] += f.bytes
        if f.layer in sizes:
            row["weight_bytes"] = int(sizes[f.layer]["nm_int8"])
            row["ratio"] = sizes[f.layer]["ratio_to_dense_int8"]
    return list(rows.values())
