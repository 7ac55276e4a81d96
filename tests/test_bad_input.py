"""Bad input, every command and input kind: exit code 2, one line naming the problem and the
offending value, no traceback, nothing created or changed.

The CLI runs in-process (``hwprune.cli.main``): one process for every case.  Only the SIGKILL
test needs a subprocess.  Every case must fail *before* the expensive part (training, Verilog
generation, Verilator builds), so the whole file stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from hwprune.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# -- the bad inputs -------------------------------------------------------------------------------

def _onnx(path: Path, nodes, inputs, outputs, inits=()) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _make_onnx_files(d: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    _onnx(d / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, ["n", 3, 3, 3])  # symbolic out channels
    _onnx(d / "symw.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], [x, w], [y])
    wt = helper.make_tensor("wt", TensorProto.FLOAT, [3, 4, 3, 3], np.ones(108, np.float32))
    _onnx(d / "deconv.onnx", [helper.make_node("ConvTranspose", ["x", "wt"], ["y"], name="up")], [x], [y],
          [wt])
    (d / "garbage.onnx").write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _make_checkpoints(d: Path) -> None:
    from hwprune.checkpoint import save_checkpoint
    from hwprune.tasks import load_task

    task = load_task("mlp")
    good = d / "good.pt"
    save_checkpoint(good, task.make_model(0), arch=task.arch, task="mlp", patterns={}, masks=None,
                    metrics={})
    data = torch.load(good, weights_only=True)

    def variant(name: str, **changes) -> None:
        torch.save({**data, **changes}, d / name)

    variant("block.pt", patterns={"fc1": "block"})
    sd = dict(data["state_dict"])
    bias = next(k for k in sd if k.endswith("bias"))
    sd[bias] = torch.zeros(3, 3)
    variant("shape.pt", state_dict=sd)
    variant("version.pt", version=99)
    variant("arch.pt", arch="NoSuchNet")
    torch.save({k: v for k, v in data.items() if k != "masks"}, d / "nomasks.pt")
    torch.save({"weights": torch.zeros(2)}, d / "plain.pt")
    (d / "garbage.pt").write_bytes(b"not a zip file at all" * 20)
    raw = good.read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with open(d / "evil.pt", "wb") as f:
        pickle.dump(_Evil(), f)


CSV = {
    "header_only.csv": "Layer, M, N, K,\n",
    "empty.csv": "",
    "badheader.csv": "name, a, b, c,\nl1, 1, 2, 3,\n",
    "text.csv": "Layer, M, N, K,\nl1, abc, 4, 4,\n",
    "zero.csv": "Layer, M, N, K,\nl1, 0, 4, 4,\n",
    "negative.csv": "Layer, M, N, K,\nl1, 4, -3, 4,\n",
    "columns.csv": "Layer, M, N, K,\nl1, 4, 4,\n",
    "duplicate.csv": "Layer, M, N, K,\ndup, 4, 4, 4,\ndup, 4, 4, 4,\n",
    "sparsity.csv": "Layer, M, N, K, Sparsity,\nl1, 4, 4, 8, 5:4,\n",
    "sparsity_text.csv": "Layer, M, N, K, Sparsity,\nl1, 4, 4, 8, half,\n",
    "filter.csv": ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                   "Num Filter, Strides,\nc1, 4, 4, 7, 7, 3, 8, 1,\n"),
    "bigk.csv": "Layer, M, N, K,\nhugek, 4, 64, 1000000000000,\n",
    "longk.csv": "Layer, M, N, K,\nlongk, 16, 16, 1000000,\n",
}

TOML = {
    "zero_rows.toml": "name = 'z'\nrows = 0\ncols = 4\n",
    "neg_cols.toml": "name = 'z'\nrows = 4\ncols = -1\n",
    "str_rows.toml": "name = 'z'\nrows = '4'\ncols = 4\n",
    "float_cols.toml": "name = 'z'\nrows = 4\ncols = 1.5\n",
    "unknown_key.toml": "name = 'z'\nrows = 4\ncols = 4\nrowz = 3\n",
    "n_gt_m.toml": "name = 'z'\nrows = 4\ncols = 4\n[sparsity]\nm = 4\nn = [8]\n",
    "acc12.toml": "name = 'z'\nrows = 4\ncols = 4\n[bits]\naccumulator = 12\n",
    "wbits.toml": "name = 'z'\nrows = 4\ncols = 4\n[bits]\nweight = 65\naccumulator = 80\n",
    "clock.toml": "name = 'z'\nrows = 4\ncols = 4\nclock_mhz = 0\n",
    "dataflow.toml": "name = 'z'\nrows = 4\ncols = 4\ndataflow = 'xyz'\n",
    "energy.toml": "name = 'z'\nrows = 4\ncols = 4\n[energy]\nmac = -1.0\n",
    "skipping.toml": "name = 'z'\nrows = 4\ncols = 4\n[sparsity]\ngroup_skipping = 'yes'\n",
    "sram.toml": "name = 'z'\nrows = 4\ncols = 4\n[memory]\nweight_sram_kib = -5\n",
    "missing_rows.toml": "name = 'z'\ncols = 4\n",
    "wrapflag.toml": "name = 'z'\nrows = 4\ncols = 4\nallow_accumulator_wrap = 'true'\n",
    "syntax.toml": "name = 'z\nrows = 4\n",
    "acc16.toml": "name = 'acc16'\nrows = 8\ncols = 8\n[bits]\naccumulator = 16\n",
    "wide.toml": "name = 'wide'\nrows = 8\ncols = 8\nallow_accumulator_wrap = true\n",
}

PLANS = {
    "plan_json.json": "{'array': 'os8x8'",
    "plan_list.json": "[1, 2]",
    "plan_key.json": json.dumps({"array": "os8x8", "layers": {}, "budget": 3}),
    "plan_block.json": json.dumps({"array": "os8x8", "layers": {"fc1": "block"}}),
    "plan_array.json": json.dumps({"array": "os7x7", "layers": {"fc1": "2:4"}}),
    "plan_layer.json": json.dumps({"array": "os8x8", "layers": {"fc9": "2:4"}}),
    "plan_noarray.json": json.dumps({"layers": {"fc1": "2:4"}}),
    "plan_pattern.json": json.dumps({"array": "os8x8", "layers": {"fc1": "5:4"}}),
}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    for name, text in {**CSV, **TOML, **PLANS}.items():
        (d / name).write_text(text)
    (d / "latin1.toml").write_bytes(b"name = 'caf\xe9'\nrows = 4\ncols = 4\n")
    (d / "latin1.json").write_bytes(b'{"array": "os8x8", "layers": {"caf\xe9": "2:4"}}')
    (d / "latin1.csv").write_bytes(b"Layer, M, N, K,\ncaf\xe9, 4, 4, 4,\n")
    (d / "afile").write_text("a regular file\n")
    (d / "exists.pt").write_text("do not overwrite\n")
    (d / "folder.pt").mkdir()
    (d / "folder.vcd").mkdir()
    (d / "examples").symlink_to(EXAMPLES)
    _make_onnx_files(d)
    _make_checkpoints(d)
    return d


# -- the cases: (argv, substrings the one line must contain) -------------------------------------

E = ["estimate"]
P = ["prune", "mlp", "--out", "new.pt"]
S = ["sim", "--array", "os8x8"]

CASES = {
    # estimate: models
    "zoo-unknown": (E + ["resnet1000"], ["'resnet1000'"]),
    "model-empty-name": (E + [""], ["''"]),
    "model-suffix": (E + ["model.h5"], ["'model.h5'"]),
    "onnx-missing": (E + ["missing.onnx"], ["missing.onnx"]),
    "onnx-garbage": (E + ["garbage.onnx"], ["garbage.onnx", "not an ONNX model"]),
    "onnx-no-layers": (E + ["relu.onnx"], ["relu.onnx", "no GEMM-shaped layers"]),
    "onnx-symbolic-conv-weight": (E + ["symw.onnx"], ["'w'", "not known"]),
    "onnx-unsupported-op": (E + ["deconv.onnx"], ["ConvTranspose", "'up'"]),
    "csv-missing": (E + ["missing.csv"], ["missing.csv"]),
    "csv-header-only": (E + ["header_only.csv"], ["header_only.csv", "no GEMM-shaped layers"]),
    "csv-empty-file": (E + ["empty.csv"], ["empty.csv", "empty"]),
    "csv-bad-header": (E + ["badheader.csv"], ["badheader.csv:1", "'name, a, b, c,'"]),
    "csv-text-value": (E + ["text.csv"], ["text.csv:2", "'abc'"]),
    "csv-zero": (E + ["zero.csv"], ["zero.csv:2", "'0'"]),
    "csv-negative": (E + ["negative.csv"], ["negative.csv:2", "'-3'"]),
    "csv-columns": (E + ["columns.csv"], ["columns.csv:2", "found 3"]),
    "csv-duplicate": (E + ["duplicate.csv"], ["duplicate.csv:3", "'dup'"]),
    "csv-sparsity": (E + ["sparsity.csv"], ["sparsity.csv:2", "'5:4'"]),
    "csv-sparsity-text": (E + ["sparsity_text.csv"], ["'half'"]),
    "csv-filter-too-big": (E + ["filter.csv"], ["filter.csv:2", "7×7"]),
    "csv-not-utf8": (E + ["latin1.csv"], ["latin1.csv", "utf-8"]),
    "csv-huge-k-groups": (E + ["bigk.csv", "--array", "wide.toml"], ["hugek", "1,000,000,000,000"]),
    "ckpt-missing": (E + ["missing.pt"], ["missing.pt"]),
    "ckpt-garbage": (E + ["garbage.pt"], ["garbage.pt", "not a readable"]),
    "ckpt-truncated": (E + ["truncated.pt"], ["truncated.pt", "not a readable"]),
    "ckpt-untrusted-pickle": (E + ["evil.pt"], ["evil.pt", "not a readable"]),
    "ckpt-plain-dict": (E + ["plain.pt"], ["plain.pt", "format marker"]),
    "ckpt-version": (E + ["version.pt"], ["version.pt", "99"]),
    "ckpt-missing-key": (E + ["nomasks.pt"], ["nomasks.pt", "masks"]),
    "ckpt-unknown-arch": (E + ["arch.pt"], ["arch.pt", "'NoSuchNet'"]),
    "ckpt-block-pattern": (E + ["block.pt"], ["block.pt", "'block'"]),
    "ckpt-shape-not-shrunk": (E + ["shape.pt"], ["shape.pt", "(3, 3)"]),
    # estimate: arrays
    "array-unknown-preset": (E + ["lenet300100", "--array", "os7x7"], ["'os7x7'"]),
    "array-missing-toml": (E + ["lenet300100", "--array", "nope.toml"], ["'nope.toml'"]),
    "array-not-utf8": (E + ["lenet300100", "--array", "latin1.toml"], ["latin1.toml", "0xe9"]),
    "array-syntax": (E + ["lenet300100", "--array", "syntax.toml"], ["syntax.toml", "not valid TOML"]),
    "array-rows-zero": (E + ["lenet300100", "--array", "zero_rows.toml"], ["rows", "not 0"]),
    "array-cols-negative": (E + ["lenet300100", "--array", "neg_cols.toml"], ["cols", "not -1"]),
    "array-rows-string": (E + ["lenet300100", "--array", "str_rows.toml"], ["rows", "'4'"]),
    "array-cols-float": (E + ["lenet300100", "--array", "float_cols.toml"], ["cols", "1.5"]),
    "array-unknown-key": (E + ["lenet300100", "--array", "unknown_key.toml"], ["'rowz'"]),
    "array-n-gt-m": (E + ["lenet300100", "--array", "n_gt_m.toml"], ["not 8"]),
    "array-acc-12": (E + ["lenet300100", "--array", "acc12.toml"], ["12 bits"]),
    "array-bits-65": (E + ["lenet300100", "--array", "wbits.toml"], ["weight", "65"]),
    "array-clock-zero": (E + ["lenet300100", "--array", "clock.toml"], ["clock_mhz", "0"]),
    "array-dataflow": (E + ["lenet300100", "--array", "dataflow.toml"], ["'xyz'"]),
    "array-energy-negative": (E + ["lenet300100", "--array", "energy.toml"], ["mac", "-1.0"]),
    "array-skipping-string": (E + ["lenet300100", "--array", "skipping.toml"], ["group_skipping", "'yes'"]),
    "array-sram-negative": (E + ["lenet300100", "--array", "sram.toml"], ["weight_sram_kib", "-5"]),
    "array-rows-missing": (E + ["lenet300100", "--array", "missing_rows.toml"], ["rows", "missing"]),
    "array-wrap-flag-string": (E + ["lenet300100", "--array", "wrapflag.toml"],
                               ["allow_accumulator_wrap", "'true'"]),
    "array-is-folder": (E + ["lenet300100", "--array", "folder.pt"], ["'folder.pt'"]),
    # estimate: patterns
    "pattern-empty": (E + ["lenet300100", "--pattern", ""], ["''"]),
    "pattern-block-bare": (E + ["lenet300100", "--pattern", "block"], ["'block'"]),
    "pattern-block-no-density": (E + ["lenet300100", "--pattern", "block:4x4"], ["'block:4x4'"]),
    "pattern-block-zero": (E + ["lenet300100", "--pattern", "block:0x4:0.5"], ["bh=0"]),
    "pattern-block-text": (E + ["lenet300100", "--pattern", "block:axb:0.5"], ["'a'"]),
    "pattern-n-gt-m": (E + ["lenet300100", "--pattern", "5:4"], ["5:4"]),
    "pattern-n-zero": (E + ["lenet300100", "--pattern", "0:4"], ["n=0"]),
    "pattern-nm-text": (E + ["lenet300100", "--pattern", "2:x"], ["'x'"]),
    "pattern-unstructured-zero": (E + ["lenet300100", "--pattern", "unstructured:0"], ["not 0.0"]),
    "pattern-unstructured-big": (E + ["lenet300100", "--pattern", "unstructured:1.5"], ["1.5"]),
    "pattern-unstructured-text": (E + ["lenet300100", "--pattern", "unstructured:abc"], ["'abc'"]),
    "pattern-unstructured-bare": (E + ["lenet300100", "--pattern", "unstructured"], ["'unstructured'"]),
    "pattern-channel-zero": (E + ["lenet300100", "--pattern", "channel:0"], ["not 0.0"]),
    "pattern-channel-negative": (E + ["lenet300100", "--pattern", "channel:-1"], ["-1"]),
    "pattern-unknown": (E + ["lenet300100", "--pattern", "sparse"], ["'sparse'"]),
    "pattern-unsupported-nm": (E + ["lenet300100", "--pattern", "3:4"], ["3:4"]),
    "pattern-unsupported-m": (E + ["lenet300100", "--pattern", "2:3"], ["2:3"]),
    # estimate: accumulator overflow, flags
    "acc-overflow-csv": (E + ["examples/topology.csv", "--array", "acc16.toml"], ["K = 27", "21-bit"]),
    "acc-overflow-long-k": (E + ["longk.csv"], ["longk", "K = 1000000", "36-bit"]),
    "estimate-unknown-flag": (E + ["lenet300100", "--foo"], ["--foo"]),
    "estimate-no-model": (E, ["MODEL"]),
    "estimate-array-no-value": (E + ["lenet300100", "--array"], ["--array"]),
    # prune: names, plans, numbers, outputs (all refused before training)
    "prune-unknown-task": (["prune", "nosuch", "--pattern", "2:4", "--out", "new.pt"], ["'nosuch'"]),
    "prune-criterion": (P + ["--pattern", "2:4", "--criterion", "nope"], ["'nope'"]),
    "prune-pattern-block": (P + ["--pattern", "block"], ["'block'"]),
    "prune-pattern-n-gt-m": (P + ["--pattern", "5:4"], ["5:4"]),
    "prune-pattern-empty": (P + ["--pattern", ""], ["''"]),
    "prune-no-pattern": (P, ["--pattern", "--plan"]),
    "prune-pattern-and-plan": (P + ["--pattern", "2:4", "--plan", "plan_key.json"], ["--pattern", "--plan"]),
    "plan-missing": (P + ["--plan", "nope.json"], ["nope.json"]),
    "plan-not-utf8": (P + ["--plan", "latin1.json"], ["latin1.json", "0xe9"]),
    "plan-bad-json": (P + ["--plan", "plan_json.json"], ["plan_json.json", "not valid JSON"]),
    "plan-not-object": (P + ["--plan", "plan_list.json"], ["plan_list.json", "list"]),
    "plan-unknown-key": (P + ["--plan", "plan_key.json"], ["'budget'"]),
    "plan-block-pattern": (P + ["--plan", "plan_block.json"], ["'fc1'", "'block'"]),
    "plan-bad-pattern": (P + ["--plan", "plan_pattern.json"], ["'fc1'", "5:4"]),
    "plan-unknown-array": (P + ["--plan", "plan_array.json"], ["plan_array.json", "'os7x7'"]),
    "plan-unknown-layer": (P + ["--plan", "plan_layer.json"], ["fc9"]),
    "plan-no-array": (P + ["--plan", "plan_noarray.json"], ["'array'"]),
    "prune-finetune-negative": (P + ["--pattern", "2:4", "--finetune-epochs", "-1"], ["--finetune-epochs", "'-1'"]),
    "prune-min-density-zero": (P + ["--pattern", "2:4", "--min-density", "0"], ["--min-density", "'0'"]),
    "prune-min-density-big": (P + ["--pattern", "2:4", "--min-density", "1.5"], ["--min-density", "'1.5'"]),
    "prune-min-density-nan": (P + ["--pattern", "2:4", "--min-density", "nan"], ["--min-density", "'nan'"]),
    "prune-steps-oneshot": (P + ["--pattern", "2:4", "--steps", "2"], ["--steps 2", "oneshot"]),
    "prune-steps-zero": (P + ["--pattern", "2:4", "--schedule", "iterative", "--steps", "0"], ["--steps", "'0'"]),
    "prune-calib-negative": (P + ["--pattern", "2:4", "--calib-batches", "-2"], ["--calib-batches", "'-2'"]),
    "prune-rescore-zero": (P + ["--pattern", "2:4", "--rescore", "0"], ["--rescore", "'0'"]),
    "prune-train-epochs-zero": (P + ["--pattern", "2:4", "--train-epochs", "0"], ["--train-epochs", "'0'"]),
    "prune-seed-negative": (P + ["--pattern", "2:4", "--seed", "-1"], ["--seed", "'-1'"]),
    "prune-seed-text": (P + ["--pattern", "2:4", "--seed", "one"], ["--seed", "'one'"]),
    "prune-schedule": (P + ["--pattern", "2:4", "--schedule", "cosine"], ["'cosine'"]),
    "prune-scope": (P + ["--pattern", "2:4", "--scope", "net"], ["'net'"]),
    "prune-array": (P + ["--pattern", "2:4", "--array", "os7x7"], ["'os7x7'"]),
    "prune-array-toml": (P + ["--pattern", "2:4", "--array", "zero_rows.toml"], ["rows", "not 0"]),
    "prune-out-exists": (["prune", "mlp", "--pattern", "2:4", "--out", "exists.pt"], ["exists.pt", "--force"]),
    "prune-out-under-file": (["prune", "mlp", "--pattern", "2:4", "--out", "afile/x.pt"], ["afile", "not a folder"]),
    "prune-out-deep-under-file": (["prune", "mlp", "--pattern", "2:4", "--out", "afile/a/b.pt"],
                                  ["afile", "not a folder"]),
    "prune-out-folder": (["prune", "mlp", "--pattern", "2:4", "--out", "folder.pt", "--force"], ["folder.pt"]),
    "prune-out-unwritable": (["prune", "mlp", "--pattern", "2:4", "--out", "/proc/x.pt"], ["/proc"]),
    "prune-ckpt-garbage": (["prune", "garbage.pt", "--pattern", "2:4", "--out", "new.pt"], ["garbage.pt"]),
    "prune-ckpt-evil": (["prune", "evil.pt", "--pattern", "2:4", "--out", "new.pt"], ["evil.pt"]),
    "prune-ckpt-block": (["prune", "block.pt", "--pattern", "2:4", "--out", "new.pt"], ["'block'"]),
    # sim (all refused before any Verilator build or simulation)
    "sim-seed-negative": (S + ["--gemm", "4,4,4", "--seed", "-1"], ["--seed", "'-1'"]),
    "sim-gemm-empty": (S + ["--gemm", ""], ["--gemm", "''"]),
    "sim-data-without-model-run": (S + ["--gemm", "4,4,4", "--data", "mypkg.data:make_loaders"],
                                   ["--data", "mypkg.data:make_loaders", "--model-run"]),
    "export-data-not-import-path": (["export", "evil.pt", "--array", "os8x8", "--out", "e", "--data", "loaders.py"],
                                    ["--data", "'loaders.py'"]),
    "sim-data-not-import-path": (S + ["cnn.pt", "--model-run", "--data", "loaders"], ["--data", "'loaders'"]),
    "sim-gemm-two": (S + ["--gemm", "1,2"], ["'1,2'"]),
    "sim-gemm-zero": (S + ["--gemm", "0,4,4"], ["'0,4,4'"]),
    "sim-gemm-text": (S + ["--gemm", "a,b,c"], ["'a,b,c'"]),
    "sim-gemm-float": (S + ["--gemm", "1e9,1e9,1e9"], ["'1e9,1e9,1e9'"]),
    "sim-gemm-huge": (S + ["--gemm", "1000000000,1000000000,1000000000"], ["K = 1000000000"]),
    "sim-gemm-huge-n": (S + ["--gemm", "1,1,1000000000000", "--pattern", "dense"], ["N=1,000,000,000,000", "at most"]),
    "sim-gemm-huge-m": (S + ["--gemm", "100000000000,4,4", "--pattern", "dense"], ["M=100,000,000,000", "at most"]),
    "sim-acc-overflow": (["sim", "--gemm", "8,64,8", "--array", "acc16.toml", "--pattern", "dense"],
                         ["K = 64", "22-bit"]),
    "sim-no-model": (S, ["MODEL_OR_CKPT", "--gemm"]),
    "sim-model-and-gemm": (S + ["lenet300100", "--gemm", "4,4,4"], ["--gemm"]),
    "sim-layer-with-gemm": (S + ["--gemm", "4,4,4", "--layer", "fc1"], ["--layer"]),
    "sim-layer-unknown": (S + ["lenet300100", "--layer", "nope"], ["'nope'"]),
    "sim-model-unknown": (S + ["resnet1000"], ["'resnet1000'"]),
    "sim-model-no-layers": (S + ["relu.onnx"], ["relu.onnx", "no GEMM-shaped layers"]),
    "sim-pattern-unsupported": (S + ["--gemm", "4,4,4", "--pattern", "3:4"], ["3:4"]),
    "sim-pattern-block": (S + ["--gemm", "4,4,4", "--pattern", "block"], ["'block'"]),
    "sim-pattern-empty": (S + ["--gemm", "4,4,4", "--pattern", ""], ["''"]),
    "sim-array": (["sim", "--gemm", "4,4,4", "--array", "os7x7"], ["'os7x7'"]),
    "sim-backend": (S + ["--gemm", "4,4,4", "--backend", "iverilog"], ["'iverilog'"]),
    "sim-vcd-missing-folder": (S + ["--gemm", "4,4,4", "--backend", "amaranth", "--vcd", "nodir/t.vcd"],
                               ["nodir"]),
    "sim-vcd-under-file": (S + ["--gemm", "4,4,4", "--backend", "amaranth", "--vcd", "afile/t.vcd"],
                           ["afile"]),
    "sim-vcd-folder": (S + ["--gemm", "4,4,4", "--backend", "amaranth", "--vcd", "folder.vcd"],
                       ["'folder.vcd'"]),
    "sim-vcd-verilator": (S + ["--gemm", "4,4,4", "--vcd", "t.vcd"], ["--backend amaranth"]),
    "sim-vcd-many-layers": (S + ["lenet300100", "--backend", "amaranth", "--vcd", "t.vcd"], ["--layer"]),
    # rtl
    "rtl-pattern": (["rtl", "--array", "os8x8", "--pattern", "3:4", "--out", "rtl_out"], ["3:4"]),
    "rtl-array": (["rtl", "--array", "zero_rows.toml", "--out", "rtl_out"], ["rows", "not 0"]),
    "rtl-ice40-alone": (["rtl", "--array", "os8x8", "--out", "rtl_out", "--ice40"], ["--ice40"]),
    "rtl-out-under-file": (["rtl", "--array", "os8x8", "--out", "afile/rtl"], ["afile"]),
    "rtl-no-out": (["rtl", "--array", "os8x8"], ["--out"]),
    # estimate --plan
    "estimate-plan-missing": (E + ["lenet300100", "--plan", "nope.json"], ["nope.json"]),
    "estimate-plan-not-utf8": (E + ["lenet300100", "--plan", "latin1.json"], ["latin1.json", "0xe9"]),
    "estimate-plan-array": (E + ["lenet300100", "--plan", "plan_array.json"], ["'os7x7'"]),
    "estimate-plan-block": (E + ["lenet300100", "--plan", "plan_block.json"], ["'block'"]),
    # search (refused before any training or measuring)
    "search-task": (["search", "nosuch", "--out", "p.json", "--budget", "0.5"], ["'nosuch'"]),
    "search-budget-zero": (["search", "mlp", "--out", "p.json", "--budget", "0"], ["--budget", "'0'"]),
    "search-cycles-negative": (["search", "mlp", "--out", "p.json", "--cycles", "-5"], ["--cycles", "'-5'"]),
    "search-candidate-block": (["search", "mlp", "--out", "p.json", "--budget", "0.5", "--candidates", "block"],
                               ["'block'"]),
    "search-array-not-utf8": (["search", "mlp", "--out", "p.json", "--budget", "0.5", "--array", "latin1.toml"],
                              ["latin1.toml"]),
    "search-criterion": (["search", "mlp", "--out", "p.json", "--budget", "0.5", "--criterion", "nope"],
                         ["'nope'"]),
    "search-out-under-file": (["search", "mlp", "--out", "afile/p.json", "--budget", "0.5"], ["afile"]),
    "search-out-exists": (["search", "mlp", "--out", "exists.pt", "--budget", "0.5"], ["exists.pt", "--force"]),
    # export
    "export-ckpt-missing": (["export", "nope.pt", "--array", "os8x8", "--out", "e"], ["nope.pt"]),
    "export-ckpt-evil": (["export", "evil.pt", "--array", "os8x8", "--out", "e"], ["evil.pt"]),
    "export-ckpt-garbage": (["export", "garbage.pt", "--array", "os8x8", "--out", "e"], ["garbage.pt"]),
    "export-formats": (["export", "good.pt", "--array", "os8x8", "--out", "e", "--formats", "hex,foo"], ["'foo'"]),
    "export-calib-zero": (["export", "good.pt", "--array", "os8x8", "--out", "e", "--calib", "0"], ["--calib", "0"]),
    "export-verify-missing": (["export", "--verify", "nodir"], ["nodir"]),
    "export-verify-file": (["export", "--verify", "afile"], ["afile"]),
    # report, demo, sweep
    "report-missing": (["report", "nodir"], ["nodir"]),
    "report-file": (["report", "afile"], ["afile"]),
    "demo-budget-zero": (["demo", "--budget", "0", "--out", "d"], ["budget", "0"]),
    "demo-budget-big": (["demo", "--budget", "2", "--out", "d"], ["budget", "2"]),
    "demo-seed-negative": (["demo", "--seed", "-1", "--out", "d"], ["--seed", "'-1'"]),
    "demo-epochs-negative": (["demo", "--epochs", "-1", "--out", "d"], ["epochs", "-1"]),
    "demo-images-zero": (["demo", "--images", "0", "--out", "d"], ["images", "0"]),
    "demo-array": (["demo", "--array", "os7x7", "--out", "d"], ["'os7x7'"]),
    "sweep-space-missing": (["sweep", "lenet300100", "--space", "nope.toml", "--out", "sw"], ["nope.toml"]),
    "sweep-space-not-utf8": (["sweep", "lenet300100", "--space", "latin1.toml", "--out", "sw"], ["latin1.toml", "0xe9"]),
    "sweep-space-key": (["sweep", "lenet300100", "--space", "unknown_key.toml", "--out", "sw"],
                        ["unknown_key.toml", "unknown key"]),
    # the command itself
    "command-unknown": (["frobnicate"], ["'frobnicate'"]),
}


def _snapshot(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(d))] = "link"
        elif p.is_file():
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(d))] = "dir"
    return out


def test_enough_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, bad_dir, monkeypatch, capsys):
    argv, expected = CASES[case]
    monkeypatch.chdir(bad_dir)
    before = _snapshot(bad_dir)
    with warnings.catch_warnings(record=True) as caught:  # a warning would be a second stderr line
        warnings.simplefilter("always")
        code = main(list(argv))
    out, err = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    lines = err.strip("\n").split("\n")
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("hwprune: error: "), err
    assert "Traceback" not in err + out
    for text in expected:
        assert text.lower() in lines[0].lower(), (text, lines[0])
    assert _snapshot(bad_dir) == before
    assert not (bad_dir / "pwned").exists()


# -- killed writers --------------------------------------------------------------------------------

_KILLED_PRUNE = textwrap.dedent("""
    import sys, time, torch
    real_save = torch.save

    def slow_save(obj, f, *a, **k):  # write part of the file, then hang: the parent kills us
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(100)
        print("writing", flush=True)
        time.sleep(60)

    torch.save = slow_save
    from hwprune.cli import main
    sys.exit(main(["prune", "mlp", "--pattern", "2:4", "--train-epochs", "1", "--finetune-epochs", "0",
                   "--out", sys.argv[1], "--json"]))
""")


def test_sigkill_during_prune_out_leaves_no_partial_file(tmp_path):
    """SIGKILL while the checkpoint is being written: no file at the target; the next write to
    the same target removes the dead writer's temporary."""
    target = tmp_path / "out.pt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PRUNE, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 240
        line = ""
        while "writing" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "writing" in line, "the child never reached the checkpoint write"
        temps = list(tmp_path.glob(".out.pt.*.tmp"))
        assert temps and not target.exists()    # mid-write: only the temporary exists
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    from hwprune.io import write_text

    write_text(target, "complete\n")              # the next write cleans up after the dead one
    assert target.read_text() == "complete\n"
    assert list(tmp_path.glob(".out.pt.*")) == []


def test_failed_writer_leaves_nothing(tmp_path):
    from hwprune.errors import ExportError
    from hwprune.io import write_with

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match="out.bin.*No space left"):
        write_with(tmp_path / "out.bin", broken)
    assert list(tmp_path.iterdir()) == []


def test_live_writers_temporaries_are_kept(tmp_path):
    from hwprune.io import clean_stale_temps

    mine = tmp_path / f".x.pt.hwprune-{os.getpid()}-abc.tmp"
    dead = tmp_path / ".x.pt.hwprune-999999999-abc.tmp"
    other = tmp_path / ".x.pt.someone-else.tmp"
    for p in (mine, dead, other):
        p.write_text("")
    assert clean_stale_temps(tmp_path / "x.pt") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


# -- accepted on purpose --------------------------------------------------------------------------

def test_huge_valid_layer_is_still_costed(tmp_path, monkeypatch, capsys):
    """M = 10¹² (costing is arithmetic in M) and K = N = 10⁶ (no (tiles × K groups) array is
    made) are costed, not refused."""
    monkeypatch.chdir(tmp_path)
    Path("m.csv").write_text("Layer, M, N, K,\nhuge, 1000000000000, 64, 64,\n")
    Path("kn.csv").write_text("Layer, M, N, K,\nbig, 64, 1000000, 1000000,\n")
    Path("wide.toml").write_text("name = 'wide'\nrows = 16\ncols = 16\n[bits]\naccumulator = 64\n")
    assert main(["estimate", "m.csv", "--json"]) == 0
    cycles = json.loads(capsys.readouterr().out)["total"]["cycles"]
    assert cycles > 10**12 // 16 * 64
    assert main(["estimate", "kn.csv", "--array", "wide.toml", "--json"]) == 0
    layer = json.loads(capsys.readouterr().out)["layers"][0]
    assert layer["macs_dense"] == 64 * 10**12


def test_wrapping_array_opts_in_and_sim_counts_wraps(tmp_path):
    """`allow_accumulator_wrap = true` accepts the overflowing layer: the estimate runs, and the
    simulator reports how many outputs wrapped (exact count from an int64 reference)."""
    from hwprune import LayerSpec, estimate_layer, load_array
    from hwprune.errors import ConfigError

    p = tmp_path / "a.toml"
    p.write_text("name = 'acc16'\nrows = 2\ncols = 2\n[bits]\naccumulator = 16\n")
    strict = load_array(p)
    layer = LayerSpec.gemm("l", 3, 64, 3)
    with pytest.raises(ConfigError, match="K = 64 needs 22-bit"):
        estimate_layer(layer, strict)
    loose = strict.replace(allow_accumulator_wrap=True)
    assert estimate_layer(layer, loose).cycles > 0
    from hwprune.sim import simulate

    w = np.full((3, 64), -128)
    x = np.full((3, 64), -128)
    x[0] = 0                                       # row 0 sums to 0: not wrapped
    res = simulate(layer, w, x, None, loose, backend="amaranth")
    assert res.bit_exact and res.wrapped == 6     # rows 1, 2 × 3 columns: 64 · 2^14 = 2^20


# -- the library refuses the same values (the CLI is not the only gate) ----------------------------

@pytest.mark.parametrize("changes, named", [
    ({"rows": 0}, "rows"), ({"cols": -2}, "cols"), ({"group_size": 0}, "group_size"),
    ({"acc_bits": 12}, "12"), ({"clock_mhz": float("nan")}, "clock_mhz"),
    ({"slot_options": (1, 8)}, "slot_options"), ({"slot_options": (1, 2)}, "dense issue width"),
    ({"dataflow": "xyz"}, "'xyz'"), ({"allow_accumulator_wrap": 1}, "allow_accumulator_wrap"),
])
def test_array_config_validates_direct_construction(changes, named):
    from dataclasses import replace

    from hwprune.config import ArrayConfig
    from hwprune.errors import ConfigError

    base = ArrayConfig(name="x", rows=4, cols=4)
    with pytest.raises(ConfigError, match=re.escape(named)):
        replace(base, **changes)
