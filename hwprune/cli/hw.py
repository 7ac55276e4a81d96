"""``hwprune rtl`` (Verilog, design JSON, Yosys statistics) and ``hwprune sim`` (cycle-accurate runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import load_array, preset_names
from ..errors import ConfigError, UnsupportedLayerError
from ..io import write_text
from .args import add_data_argument, nonnegative_int, positive_int
from .helptext import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    arrays = ", ".join(preset_names())
    p = sub.add_parser(
        "rtl", help="generate the N:M sparse MAC array as Verilog",
        description="Generate the output-stationary N:M sparse systolic array (Amaranth) for an "
                    "array config and pattern: one Verilog file for the top, and a JSON file "
                    "describing its ports, parameters, timing and memory-image layouts.",
        epilog="examples:\n"
               "  hwprune rtl --array os8x8 --pattern 2:4 --out build/\n"
               "  hwprune rtl --array os8x8 --pattern dense --out build/ --stats --ice40\n"
               "One design serves every layer of its (array, N:M): layers are memory images "
               "(see `hwprune sim`).",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("--array", required=True, metavar="PRESET|FILE.toml",
                   help=f"array preset ({arrays}) or a TOML file")
    p.add_argument("--pattern", default="2:4", help="N:M pattern the design issues, or dense (default 2:4)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--readmemh", action="store_true",
                   help="memories load +mem_<name>=FILE.hex images at time 0 (simulation)")
    p.add_argument("--stats", action="store_true", help="run yosys synth: cells, flip-flops, multipliers")
    p.add_argument("--ice40", action="store_true", help="with --stats, also synth_ice40 LUT4 counts (slow)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--json", action="store_true", help="print the design description as JSON")
    p.set_defaults(func=run_rtl)

    s = sub.add_parser(
        "sim", help="simulate layers cycle-accurately on the generated array",
        description="Run layers on the generated array (Verilator, or the Amaranth simulator) "
                    "and check outputs bit-exact against numpy and cycles against the cost model. "
                    "A layer larger than the memories runs in the schedule's passes: the testbench "
                    "is the DMA engine, loading each pass through the host port at the array's "
                    "dram_bytes_per_cycle and storing its outputs, single- or double-buffered "
                    "(double_buffer in the array config); the simulated total (load + array + "
                    "store, overlapped when double-buffered) must equal the predicted total. "
                    "Float weights are quantized symmetric per-tensor to int8 and pruned with "
                    "the pattern; activations are random int8; attention's activation×activation "
                    "matmuls run dense (their second operand in the weight memory). With --model-run, "
                    "a checkpoint's whole int8 model runs on its task's test images instead.",
        epilog="examples:\n"
               "  hwprune sim --gemm 64,256,64 --array os8x8 --pattern 2:4\n"
               "  hwprune sim --gemm 1024,1024,64 --array os8x8 --pattern 2:4   (in passes)\n"
               "  hwprune sim lenet300100 --layer fc2 --array os8x8 --pattern 1:4 --json\n"
               "  hwprune sim --gemm 8,16,8 --array os8x8 --backend amaranth --vcd trace.vcd\n"
               "Exit code 1 when a layer is not bit-exact or not cycle-exact.",
        formatter_class=RawDescriptionHelpFormatter)
    s.add_argument("model", nargs="?", metavar="MODEL_OR_CKPT", help="zoo name, .onnx, .csv or checkpoint")
    s.add_argument("--layer", help="simulate only this layer")
    s.add_argument("--gemm", metavar="M,K,N", help="a random int8 GEMM instead of a model")
    s.add_argument("--array", required=True, metavar="PRESET|FILE.toml",
                   help=f"array preset ({arrays}) or a TOML file")
    s.add_argument("--pattern", default="2:4", help="N:M pattern or dense (default 2:4)")
    s.add_argument("--backend", choices=("verilator", "amaranth"), default="verilator")
    s.add_argument("--vcd", metavar="FILE", help="VCD trace of one layer (Amaranth back end)")
    s.add_argument("--force", action="store_true", help="overwrite an existing --vcd file")
    s.add_argument("--seed", type=nonnegative_int, default=0, help="random seed of activations (and --gemm weights)")
    s.add_argument("--model-run", action="store_true",
                   help="run the whole int8 model of a checkpoint on the array over its task's test "
                        "images and compare the logits with the integer reference (hwprune.quant)")
    s.add_argument("--images", type=positive_int, default=64, metavar="N",
                   help="with --model-run: test images, folded into M (default 64)")
    add_data_argument(s, "with --model-run: calibration from train, the images run from test (else "
                         "val); default: the checkpoint's built-in task")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_sim)


def run_rtl(args: argparse.Namespace) -> int:
    from ..rtl.emit import TOP_NAME, describe, design_slots, synth_stats, verilog

    if args.ice40 and not args.stats:
        raise ConfigError("--ice40 needs --stats")
    from ..io import check_output_dir

    array = load_array(args.array)
    slots = design_slots(array, args.pattern)
    out = check_output_dir(args.out, what=f"--out {args.out}:")
    v_path, j_path = out / f"{TOP_NAME}.v", out / f"{TOP_NAME}.json"
    for path in (v_path, j_path):
        if path.exists() and not args.force:
            raise ConfigError(f"{path} exists; pass --force to overwrite it")
    info = describe(array, slots)
    info["verilog"] = v_path.name
    if args.stats:
        info["stats"] = synth_stats(array, slots, ice40=args.ice40)
    write_text(v_path, verilog(array, slots, readmemh=args.readmemh), force=args.force)
    write_text(j_path, json.dumps(info, indent=2) + "\n", force=args.force)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"wrote {v_path} and {j_path}: {array.rows}×{array.cols} array, "
                  f"{info['parameters']['pattern']} ({'dense' if slots == array.group_size else 'sparse'})")
    t = Table(title="memories", title_justify="left")
    for col in ("memory", "width", "depth", "KiB"):
        t.add_column(col, justify="left" if col == "memory" else "right")
    for name, mem in info["memories"]["memories"].items():
        t.add_row(name, str(mem["width"]), f"{mem['depth']:,}", f"{mem['width'] * mem['depth'] / 8192:,.1f}")
    console.print(t)
    if args.stats:
        st = Table(title="yosys synth (memories excluded)", title_justify="left")
        cols = ["block", "cells", "flip-flops", "multipliers"] + (["ice40 LUT4", "ice40 DFF"] if args.ice40 else [])
        for col in cols:
            st.add_column(col, justify="left" if col == "block" else "right")
        for part in ("array", "controller"):
            d = info["stats"][part]
            row = [part, f"{d['cells']:,}", f"{d['flip_flops']:,}", str(d["multipliers"])]
            if args.ice40:
                row += [f"{d['ice40']['lut4']:,}", f"{d['ice40']['dff']:,}"]
            st.add_row(*row)
        console.print(st)
    return 0


def _gemm(text: str):
    from ..ir import LayerSpec
    try:
        m, k, n = (int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--gemm takes M,K,N (three positive integers), not {text!r}") from None
    if min(m, k, n) < 1:
        raise ConfigError(f"--gemm takes M,K,N (three positive integers), not {text!r}")
    return LayerSpec.gemm(f"gemm_{m}x{k}x{n}", m, k, n)


def run_sim(args: argparse.Namespace) -> int:
    from ..patterns import Dense, parse_pattern
    from ..sim import layer_operands, simulate

    if (args.model is None) == (args.gemm is None):
        raise ConfigError("give a MODEL_OR_CKPT or --gemm M,K,N (one of them)")
    if args.model_run:
        return _run_model_on_rtl(args)
    if args.data is not None:
        raise ConfigError(f"--data {args.data}: the data is used with --model-run only")
    if args.layer is not None and args.gemm is not None:
        raise ConfigError("--layer selects a layer of a model; it cannot be used with --gemm")
    array = load_array(args.array)
    pattern = parse_pattern(args.pattern)
    if args.vcd is not None:
        _check_vcd(args.vcd, args.backend)
    if args.gemm is not None:
        layers = [_gemm(args.gemm)]
    else:
        from ..importers import load_model
        layers = load_model(args.model)
        if args.layer is not None:
            chosen = [layer for layer in layers if layer.name == args.layer]
            if not chosen:
                raise ConfigError(f"no layer {args.layer!r} in {args.model} (layers: "
                                  f"{', '.join(layer.name for layer in layers)})")
            layers = chosen
    if args.vcd is not None and len(layers) != 1:
        raise ConfigError("--vcd traces one layer: add --layer NAME or use --gemm")
    for layer in layers:  # refuse the whole run before simulating anything
        array.check_accumulator(layer.K, layer.name)
    rows, ok = [], True
    for layer in layers:
        try:
            # attention (activation × activation) runs dense: its second operand is data
            pat = pattern if layer.has_weights else Dense()
            w, x = layer_operands(layer, pat, array, seed=args.seed)
            res = simulate(layer, w, x, pat, array, backend=args.backend, vcd=args.vcd,
                           force=args.force, verify=False)
        except UnsupportedLayerError as exc:
            if len(layers) == 1:
                raise
            rows.append({"layer": layer.name, "skipped": str(exc)})
            continue
        ok &= res.bit_exact and res.cycle_exact
        rows.append({**res.to_dict(), "M": layer.M, "K": layer.K, "N": layer.N, "groups": layer.groups})
    if args.json:
        print(json.dumps({"array": array.name, "pattern": str(pattern), "backend": args.backend,
                          "layers": rows}, indent=2))
    else:
        _render(rows, title=f"{args.model or args.gemm} on {array.name}, {pattern}, {args.backend}")
    return 0 if ok else 1


def _run_model_on_rtl(args: argparse.Namespace) -> int:
    """``sim CKPT --model-run``: every GEMM of the int8 model (attention products included) on the array."""
    from ..checkpoint import load_checkpoint
    from ..quant import quantize
    from ..sim.model import run_model
    from ..usermodel import checkpoint_workload
    from ..workload import first_examples

    for flag, value in (("--layer", args.layer), ("--vcd", args.vcd)):
        if value is not None:
            raise ConfigError(f"{flag} cannot be used with --model-run (it runs every layer)")
    array = load_array(args.array)
    ckpt = load_checkpoint(args.model)
    task = checkpoint_workload(ckpt, args.model, args.data)
    q = quantize(ckpt.model, task, array=array, patterns=ckpt.patterns)
    images, labels = first_examples(task, args.images)
    n = len(labels)
    x = q.quantize_input(images)
    targets = labels.numpy()
    res = run_model(q, x, array, backend=args.backend, verify=False)
    ok = res.bit_exact and res.cycles == res.predicted_cycles
    summary = {"checkpoint": str(args.model), "array": array.name, "backend": args.backend, "images": n,
               "accuracy_rtl": float((res.logits.argmax(axis=1) == targets).mean()),
               "accuracy_reference": float((res.reference_logits.argmax(axis=1) == targets).mean()),
               **res.to_dict()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if ok else 1
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{args.model} on {array.name} ({args.backend}), {n} images", title_justify="left")
    for col in ("layer", "M", "K", "N", "passes", "sim cycles", "predicted"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for layer in res.layers:
        t.add_row(layer.name, f"{layer.M:,}", f"{layer.K:,}", f"{layer.N:,}", str(layer.passes),
                  f"{layer.cycles:,}", f"{layer.predicted_cycles:,}")
    console = Console()
    console.print(t)
    console.print(f"accuracy on the RTL {summary['accuracy_rtl']:.4f} (integer reference "
                  f"{summary['accuracy_reference']:.4f}); logits bit-exact: "
                  f"{'yes' if res.bit_exact else 'NO'}; cycles {res.cycles:,} (predicted {res.predicted_cycles:,})")
    return 0 if ok else 1


def _check_vcd(vcd: str, backend: str) -> None:
    """Refuse a trace that cannot be written before anything is simulated."""
    from ..io import check_output_dir

    if backend != "amaranth":
        raise ConfigError("--vcd traces come from the Amaranth back end: add --backend amaranth")
    path = Path(vcd)
    if not vcd or path.is_dir():
        raise ConfigError(f"--vcd needs a file name, not {vcd!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--vcd {vcd}: folder {parent} does not exist")
    check_output_dir(parent, what=f"--vcd {vcd}:")


def _render(rows: list[dict], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    cols = ("layer", "M", "K", "N", "passes", "load", "array", "store", "sim cycles", "predicted",
            "cycle-exact", "bit-exact", "cycles/s")
    for col in cols:
        t.add_column(col, justify="left" if col in ("layer", "passes") else "right", no_wrap=col != "layer")
    for r in rows:
        if "skipped" in r:
            t.add_row(r["layer"], *[""] * (len(cols) - 1), style="dim")
            continue
        passes = f"{r['passes']:,} {r['pass_order']}, {'double' if r['double_buffer'] else 'single'}" + (
            f", K in {r['k_split']}" if r["k_split"] > 1 else "")
        t.add_row(r["layer"], f"{r['M']:,}", f"{r['K']:,}", f"{r['N']:,}", passes, f"{r['load_cycles']:,}",
                  f"{r['array_cycles']:,}", f"{r['store_cycles']:,}", f"{r['cycles']:,}",
                  f"{r['predicted_cycles']:,}", "yes" if r["cycle_exact"] else "NO",
                  "yes" if r["bit_exact"] else "NO", f"{r['cycles_per_second']:,.0f}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    console.print(t)
    for r in rows:
        if "skipped" in r:
            console.print(f"skipped {r['skipped']}")
        elif r.get("wrapped"):
            console.print(f"{r['layer']}: {r['wrapped']:,} of {r['M'] * r['N']:,} outputs wrapped "
                          "around the accumulator (allow_accumulator_wrap)")
