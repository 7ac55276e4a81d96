"""Metrics: sizes by their stated formulas, MACs and cycles from the cost model with real masks."""

from __future__ import annotations

import math

import pytest
import torch
from rich.console import Console
from torch import nn

from hwprune.config import load_array
from hwprune.cost import estimate_model
from hwprune.importers import from_torch
from hwprune.metrics import compare, measure, param_counts, storage_bytes
from hwprune.prune import make_permanent, pattern_prune, prune_model
from hwprune.tasks import load_task
from hwprune.train import clone_model, train


def test_storage_formulas_on_one_layer():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    with torch.no_grad():
        lin.weight.add_(torch.sign(lin.weight) * 0.1)  # no accidental zeros
    dense = storage_bytes(lin)
    assert dense["fp32"] == 4 * (32 + 4)
    assert dense["csr"] == 32 * 8 + 5 * 4 + 4 * 4
    assert dense["nm_int8"] == 32 + 4 * 4           # n = m: int8 values, no index bits
    pattern_prune(lin, "weight", "1:4")
    sparse = storage_bytes(lin)
    assert sparse["fp32"] == dense["fp32"]
    assert sparse["csr"] == 8 * 8 + 5 * 4 + 4 * 4
    slots = 4 * 2 * 1                                # rows × groups × n
    assert sparse["nm_int8"] == slots + math.ceil(slots * 2 / 8) + 4 * 4
    assert param_counts(lin) == (36, 8 + 4)


def test_measure_uses_the_cost_model_with_actual_masks():
    task = load_task("digits_cnn")
    model = task.make_model(0)
    train(model, task, epochs=1)
    base = clone_model(model)
    res = prune_model(model, task, pattern="2:4", finetune_epochs=0)
    m = measure(model, task, timing_repeats=3)
    specs = from_torch(make_permanent(clone_model(model)), task.example_inputs(1))
    cost = estimate_model(specs, load_array("os16x16"), masks=res.masks)
    assert m.cycles == cost.cycles and m.energy_pj == pytest.approx(cost.total("energy_pj"))
    assert m.macs_dense == sum(s.macs for s in specs)
    assert m.macs_effective == sum(int(res.masks[s.name].sum()) * s.M for s in specs)
    assert m.flops_effective == 2 * m.macs_effective
    cmp = compare(base, model, task, timing_repeats=3)
    d = cmp.to_dict()
    assert d["before"]["cycles"] > d["after"]["cycles"]
    assert d["ratios"]["macs_effective"] == pytest.approx(0.5, abs=0.02)
    assert d["before"]["params_total"] == d["after"]["params_total"]
    assert d["after"]["latency_ms"] > 0
    console = Console(record=True, width=120)
    console.print(cmp.table())
    text = console.export_text()
    for label in ("accuracy", "non-zero parameters", "size CSR", "MACs effective", "cycles", "energy"):
        assert label in text
