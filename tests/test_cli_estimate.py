"""``hwprune estimate`` as a user runs it: tables, JSON, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hwprune.cli import main
from hwprune import NM, LayerSpec, load_array, make_schedule
from hwprune.schedule import plan_passes

GEMM_CSV = "Layer, M, N, K, Sparsity,\nff1, 128, 3072, 768, 2:4,\nff2, 128, 768, 3072, 1:4,\n"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_schema_and_csv_sparsity_column(tmp_path, capsys):
    csv = tmp_path / "bert_ffn.csv"
    csv.write_text(GEMM_CSV)
    code, out, err = run_cli(capsys, "estimate", str(csv), "--array", "os16x16", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["array"]["rows"] == 16
    l1, l2 = data["layers"]
    assert (l1["M"], l1["K"], l1["N"], l1["pattern"]) == (128, 768, 3072, "2:4")
    assert l2["pattern"] == "1:4"
    # 2:4 on K = 768: K′ = 384; folds = 8 · 192 → 1536 · (384 + 30) − 1
    assert l1["compute_cycles"] == 1536 * 414 - 1
    assert l1["cycles"] == l1["compute_cycles"] + l1["fill_cycles"] + l1["stall_cycles"]
    # the layer runs in SRAM-sized passes (the planner's count and order), reported per layer
    arr = load_array("os16x16")
    plan = plan_passes(make_schedule(LayerSpec.gemm("l1", 128, 768, 3072), arr, NM(2, 4)), arr)
    assert (l1["passes"], l1["pass_order"], l1["k_split"]) == (plan.count, plan.order, plan.k_split)
    assert l1["passes"] > 1 and data["total"]["passes"] == l1["passes"] + l2["passes"]
    for key in ("cycles", "macs_dense", "macs_executed", "energy_pj", "bytes"):
        assert key in data["total"]
    assert data["total"]["speedup_vs_dense"] > 1.9


def test_pattern_flag_overrides_csv_column(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    csv.write_text(GEMM_CSV)
    code, out, _ = run_cli(capsys, "estimate", str(csv), "--pattern", "dense", "--json")
    assert code == 0
    assert {layer["pattern"] for layer in json.loads(out)["layers"]} == {"dense"}


def test_bert_layer_speedups(capsys):
    speedups = {}
    for pattern in ("dense", "2:4", "1:4"):
        code, out, _ = run_cli(capsys, "estimate", "bert_layer", "--array", "os16x16", "--pattern", pattern, "--json")
        assert code == 0
        speedups[pattern] = {layer["name"]: layer["compute_cycles"] for layer in json.loads(out)["layers"]}
    large = [n for n, c in speedups["dense"].items() if c > 500_000 and speedups["2:4"][n] < c]
    assert large, speedups["dense"]
    for name in large:
        assert speedups["dense"][name] / speedups["2:4"][name] >= 1.9
    # the FFN down-projection (K = 3072) clears 3.6× under 1:4
    assert max(speedups["dense"][n] / speedups["1:4"][n] for n in large) >= 3.6


def test_table_output(capsys):
    code, out, _ = run_cli(capsys, "estimate", "lenet300100", "--array", "os8x8", "--pattern", "2:4")
    assert code == 0
    assert "fc1" in out and "total" in out and "speedup over dense" in out
    assert "passes" in out and "stall" in out


@pytest.mark.parametrize("argv,needle", [
    (["estimate", "resnet18", "--array", "os17x17"], "os17x17"),
    (["estimate", "resnet18", "--pattern", "3:2"], "3:2"),
    (["estimate", "resnet18", "--pattern", "3:4"], "3:4"),
    (["estimate", "no_such_model"], "no_such_model"),
    (["estimate", "missing.onnx"], "missing.onnx"),
    (["estimate"], "MODEL"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle.lower() in err.lower()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "hwprune", "estimate", "nope", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hwprune: error:") and "nope" in proc.stderr
