"""hwprune.search: exact selection vs brute force, candidates, costs with real masks, the
sensitivity cache, plans that round-trip, and the cycle chain search → prune --plan → estimate --plan."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwprune.checkpoint import load_checkpoint
from hwprune.cli import main
from hwprune.config import load_array
from hwprune.errors import ConfigError
from hwprune.ir import LayerSpec
from hwprune.patterns import NM, Block, Channel, Dense, Unstructured
from hwprune.prune.plan import (
    LayerPrediction,
    PruningPlan,
    load_plan,
    pack_mask,
    plan_from_dict,
    save_plan,
    unpack_mask,
)
from hwprune.search import (
    Budget,
    Cost,
    SearchTable,
    build_table,
    candidate_cost,
    default_candidates,
    make_plan,
    minimum_cost,
    pareto,
    parse_candidates,
    plan_cost,
    search,
    solve_exact,
    solve_greedy,
    uniform_selection,
)
from hwprune.tasks import load_task
from hwprune.train import train
from hwprune.workload import Workload

ARRAY = load_array("os16x16")


# -- the solver ---------------------------------------------------------------------------------

def brute_force(table: SearchTable, caps: dict[str, float]) -> float | None:
    """Smallest summed loss over every allowed combination meeting ``caps`` (None: infeasible)."""
    best = None
    keys = ("cycles", "energy_pj", "weight_bytes")
    options = [np.flatnonzero(table.allowed[i]) for i in range(len(table.layers))]
    for choice in itertools.product(*options):
        rows = np.arange(len(choice))
        total = table.costs[rows, list(choice)].sum(axis=0) + np.array(table.fixed.as_tuple())
        if all(total[keys.index(k)] <= v for k, v in caps.items()):
            value = table.loss[rows, list(choice)].sum()
            best = value if best is None else min(best, value)
    return best


@st.composite
def tables(draw):
    L = draw(st.integers(1, 4))
    C = draw(st.integers(1, 4))
    ints = st.integers(0, 500)
    cycles = np.array(draw(st.lists(st.lists(ints, min_size=C, max_size=C), min_size=L, max_size=L)))
    energy = np.array(draw(st.lists(st.lists(ints, min_size=C, max_size=C), min_size=L, max_size=L))) * 1.5
    loss = np.array(draw(st.lists(st.lists(st.floats(-1, 10, allow_nan=False), min_size=C, max_size=C),
                                  min_size=L, max_size=L)))
    allowed = np.array(draw(st.lists(st.lists(st.booleans(), min_size=C, max_size=C), min_size=L, max_size=L)))
    allowed[:, 0] |= ~allowed.any(axis=1)  # every layer keeps at least one candidate
    fixed = Cost(draw(st.integers(0, 50)), 0.0, 0)
    table = SearchTable.from_arrays(ARRAY, [f"l{i}" for i in range(L)], ["dense", "2:4", "1:4", "channel:0.5"][:C],
                                    loss, {"cycles": cycles, "energy_pj": energy}, allowed=allowed, fixed=fixed,
                                    reference_costs=np.zeros((L, 3)) + [1000, 0, 0])
    cap_cycles = draw(st.integers(1, 2100))
    cap_energy = draw(st.none() | st.floats(1, 3000))
    return table, cap_cycles, cap_energy


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_exact_selection_equals_brute_force(case):
    table, cap_cycles, cap_energy = case
    budget = Budget(cycles=cap_cycles, energy_pj=cap_energy)
    expected = brute_force(table, budget.caps(table.reference))
    if expected is None:
        with pytest.raises(ConfigError):
            solve_exact(table, budget)
        return
    sel = solve_exact(table, budget)
    assert sel.value == pytest.approx(expected, abs=1e-9)
    assert sel.cost.cycles <= cap_cycles and (cap_energy is None or sel.cost.energy_pj <= cap_energy)
    assert all(table.allowed[i, j] for i, j in enumerate(sel.choice))
    try:
        greedy = solve_greedy(table, budget)
    except ConfigError:
        return  # the greedy baseline may miss a feasible plan; the exact one may not
    assert greedy.value >= sel.value - 1e-9
    assert greedy.cost.cycles <= cap_cycles


def test_infeasible_budget_names_the_minimum():
    table = SearchTable.from_arrays(ARRAY, ["a", "b"], ["dense", "2:4"], [[0, 1], [0, 2]],
                                    {"cycles": [[100, 60], [50, 30]]}, fixed=Cost(7, 0.0, 0))
    assert minimum_cost(table).cycles == 97
    with pytest.raises(ConfigError, match=r"minimum feasible is 97 cycles"):
        solve_exact(table, Budget(cycles=96))
    assert solve_exact(table, Budget(cycles=97)).choice == (1, 1)
    assert solve_exact(table, Budget(fraction=0.8)).choice == (1, 0)   # 0.8 × 157 = 125 cycles
    # jointly infeasible though each budget alone is not
    table2 = SearchTable.from_arrays(ARRAY, ["a"], ["dense", "2:4"], [[0, 1]],
                                     {"cycles": [[10, 20]], "energy_pj": [[20, 10]]})
    with pytest.raises(ConfigError, match="together"):
        solve_exact(table2, Budget(cycles=15, energy_pj=15))


def test_greedy_takes_the_cheapest_sensitivity_per_cycle():
    # saving 40 cycles on layer a costs 4 (0.1/cycle); 40 on layer b costs 1 (0.025/cycle)
    table = SearchTable.from_arrays(ARRAY, ["a", "b"], ["dense", "2:4"], [[0, 4], [0, 1]],
                                    {"cycles": [[100, 60], [100, 60]]})
    sel = solve_greedy(table, Budget(cycles=160))
    assert sel.choice == (0, 1) and sel.cost.cycles == 160
    front = pareto(table, points=3)
    assert [p.cycles for p in front.exact] == [120, 160, 200]
    assert {p.method for p in front.uniform} == {"uniform dense", "uniform 2:4"}


def test_milp_scales_to_resnet50_sized_tables():
    rng = np.random.default_rng(0)
    L, C = 53, 12
    cycles = rng.integers(1_000, 2_000_000, size=(L, C))
    cycles[:, 0] = cycles.max(axis=1)
    loss = rng.random((L, C)) * (cycles[:, :1] - cycles) / cycles[:, :1]
    table = SearchTable.from_arrays(ARRAY, [f"l{i}" for i in range(L)], ["dense", *(f"{n}:16" for n in range(15, 4, -1))],
                                    loss, {"cycles": cycles, "energy_pj": cycles * 3.0})
    sel = solve_exact(table, Budget(fraction=0.5, energy_pj=0.6 * cycles[:, 0].sum() * 3.0))
    assert sel.cost.cycles <= table.reference.cycles * 0.5
    assert sel.value <= solve_greedy(table, Budget(fraction=0.5, energy_pj=0.6 * cycles[:, 0].sum() * 3.0)).value + 1e-9


# -- candidates and costs -----------------------------------------------------------------------

def test_default_candidates_follow_the_array():
    cands = default_candidates(ARRAY)
    assert cands[:4] == (Dense(), NM(2, 4), NM(1, 4), NM(1, 8))
    assert Block(16, 4, 0.5) in cands and Channel(0.25) in cands and Unstructured(0.25) in cands
    only_two = ARRAY.replace(slot_options=(2, 4))
    assert NM(1, 4) in default_candidates(only_two) and NM(1, 8) not in default_candidates(only_two)
    assert parse_candidates("dense, 2:4,channel:0.5", ARRAY) == (Dense(), NM(2, 4), Channel(0.5))
    narrowed = parse_candidates("-unstructured,-1:8,+block:8x4:0.5", ARRAY)
    assert not any(isinstance(c, Unstructured) for c in narrowed)
    assert NM(1, 8) not in narrowed and Block(8, 4, 0.5) in narrowed
    for bad, needle in (("2:4,-dense", "mix"), ("-2:3", "not in the set"), ("dense,5:4", "5:4"), (" , ", "empty")):
        with pytest.raises(ConfigError, match=needle):
            parse_candidates(bad, ARRAY)


def test_costs_come_from_the_real_mask():
    spec = LayerSpec.linear("fc", 256, 64, tokens=32)
    dense = candidate_cost([spec], ARRAY, Dense(), None)
    assert dense.weight_bytes == 256 * 64  # int8, no indices
    rng = np.random.default_rng(0)
    scores = rng.random((64, 256))
    unstructured = candidate_cost([spec], ARRAY, Unstructured(0.25), Unstructured(0.25).mask(scores))
    assert unstructured.cycles == dense.cycles  # scattered zeros save nothing on an N:M array
    nm = candidate_cost([spec], ARRAY, NM(2, 4), NM(2, 4).mask(scores))
    one8 = candidate_cost([spec], ARRAY, NM(1, 8), NM(1, 8).mask(scores))
    one4 = candidate_cost([spec], ARRAY, NM(1, 4), NM(1, 4).mask(scores))
    assert nm.cycles < dense.cycles and one8.cycles <= one4.cycles < nm.cycles
    assert nm.weight_bytes == 64 * 128 + 64 * 128 * 2 // 8  # half the values + 2-bit indices
    # a tile-aligned block mask skips whole K groups: cheaper than its density alone predicts
    block = candidate_cost([spec], ARRAY, Block(16, 4, 0.5), Block(16, 4, 0.5).mask(scores))
    assert block.cycles < dense.cycles


# -- plans --------------------------------------------------------------------------------------

def test_plan_round_trips_and_old_plans_load(tmp_path):
    mask = np.random.default_rng(1).random((10, 37)) > 0.5
    plan = PruningPlan.make("os16x16", {"a": "2:4", "b": "block:16x4:0.5", "c": "dense"},
                            predicted={"a": LayerPrediction(120, 3.5e5, 640, 0.01, -0.002),
                                       "b": LayerPrediction(90, 2e5, 300, 0.2, None)},
                            masks={"b": mask}, criterion="taylor", model_hash="sha256:ab",
                            budget={"fraction": 0.5}, search={"task": "mlp", "predicted": {"cycles": 210}})
    path = save_plan(tmp_path / "p.json", plan)
    again = load_plan(path)
    assert again.to_dict() == plan.to_dict()
    assert (again.masks["b"] == mask).all() and again.predicted["a"] == plan.predicted["a"]
    assert again.criterion == "taylor" and again.search["predicted"]["cycles"] == 210
    assert json.loads(path.read_text())["layers"]["c"] == "dense"
    old = {"array": "os16x16", "layers": {"fc1": "2:4", "fc2": "channel:0.5"}}
    assert plan_from_dict(old).to_dict() == old
    assert (unpack_mask(pack_mask(mask)) == mask).all()
    for bad, needle in (({**old, "layer": {}}, "unknown plan keys"),
                        ({"array": "x", "layers": {"a": {"pattern": "2:4", "cycles": 3}}}, "needs cycles"),
                        ({"array": "x", "layers": {"a": {"pattern": "2:4", "mask": {"shape": [2, 2], "packbits": "!"}}}},
                         "corrupted"),
                        ({"array": "x", "layers": {"a": {"pattern": "2:4", "cycles": -1, "energy_pj": 1,
                                                          "weight_bytes": 1}}}, "non-negative")):
        with pytest.raises(ConfigError, match=needle):
            plan_from_dict(bad)


# -- on a real model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    task = load_task("digits_cnn")
    model = task.make_model(0)
    train(model, task, epochs=3, seed=0)
    return task, model


def test_sensitivity_cache_is_reused(digits, tmp_path):
    task, model = digits
    kw = {"candidates": "dense,2:4,channel:0.5", "cache_dir": tmp_path / "cache"}
    before = [p.detach().clone() for p in model.state_dict().values()]
    first = build_table(model, task, "os16x16", **kw)
    assert first.meta.measured == 4 * 2 - 1 and first.meta.reused == 0  # fc2 takes no channel pruning
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))  # model untouched
    second = build_table(model, task, "os8x8", **kw)
    assert second.meta.measured == 0 and second.meta.reused == first.meta.measured
    assert np.array_equal(first.loss, second.loss) and np.array_equal(first.accuracy, second.accuracy)
    # other weights: nothing reused
    other = task.make_model(1)
    assert build_table(other, task, "os16x16", **kw).meta.reused == 0
    # the one-shot loss change is real: 2:4 everywhere hurts more than nothing
    assert (first.loss[:, 1] > 0).any() and (first.loss[:, 0] == 0).all()


def test_fisher_proxy_and_user_dataloaders(digits):
    task, model = digits
    table = build_table(model, task, candidates="dense,2:4,1:4", sensitivity="fisher", use_cache=False)
    assert np.isnan(table.accuracy).all() and (table.loss[:, 0] == 0).all()
    assert (table.loss[:, 2] >= table.loss[:, 1]).all()  # 1:4 removes a superset of what 2:4 removes
    with pytest.raises(ConfigError, match="accuracy"):
        table.objective("accuracy")
    ds = torch.utils.data.TensorDataset(task.val.inputs[0], task.val.targets)
    tr = torch.utils.data.TensorDataset(task.train.inputs[0], task.train.targets)
    data = Workload(torch.utils.data.DataLoader(tr, batch_size=64), torch.utils.data.DataLoader(ds, batch_size=100))
    result = search(model, data, "os16x16", 0.7, candidates="dense,2:4,1:4", use_cache=False)
    assert result.selection.cost.cycles <= 0.7 * result.table.reference.cycles
    assert result.table.meta.task == data.name and result.table.meta.measured == 8
    tighter = result.with_budget(0.5, method="greedy")  # the same table, nothing measured again
    assert tighter.table is result.table and tighter.selection.method == "greedy"
    assert tighter.plan.search["predicted"]["cycles"] == tighter.selection.cost.cycles <= 0.5 * result.table.reference.cycles


def test_search_prune_estimate_agree_to_the_cycle(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    plan_path, ckpt = tmp_path / "plan.json", tmp_path / "pruned.pt"
    # blocks and 1:8 only: the plan must carry masks, the hardest case for estimate --plan
    rc = main(["search", "digits_cnn", "--train-epochs", "2", "--budget", "0.9", "--candidates",
               "block:16x4:0.5,block:16x4:0.25,1:8", "--out", str(plan_path), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    predicted = out["selection"]["cycles"]
    plan = load_plan(plan_path)
    assert plan.masks and plan.search["predicted"]["cycles"] == predicted
    assert predicted == sum(p.cycles for p in plan.predicted.values())
    rc = main(["prune", "digits_cnn", "--train-epochs", "2", "--plan", str(plan_path), "--finetune-epochs", "1",
               "--out", str(ckpt), "--json"])
    assert rc == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["after"]["cycles"] == predicted
    for model in ("digits_cnn", str(ckpt)):
        assert main(["estimate", model, "--plan", str(plan_path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["total"]["cycles"] == predicted
    # the pruned checkpoint's own masks give the same cycles without the plan
    ck = load_checkpoint(ckpt)
    assert all((ck.masks[n] == m).all() for n, m in plan.masks.items())


def test_search_cli_infeasible_budget_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "p.json"
    rc = main(["search", "mlp", "--train-epochs", "1", "--cycles", "100", "--out", str(out), "--json"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "infeasible" in err and "minimum feasible is" in err
    assert not out.exists() and not (tmp_path / "cache").exists()  # rejected before measuring
    for argv, needle in ((["search", "mlp", "--out", str(out)], "give a budget"),
                         (["search", "mlp", "--budget", "1.5", "--out", str(out)], "1.5"),
                         (["search", "mlp", "--budget", "0.5", "--candidates", "3:x", "--out", str(out)], "3:x"),
                         (["search", "mlp", "--budget", "0.5", "--criterion", "nope", "--out", str(out)], "nope")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err


def test_plan_cost_refuses_another_model(tmp_path):
    plan = PruningPlan.make("os16x16", {"fc1": "block:16x4:0.5"}, masks={"fc1": np.ones((3, 3), bool)})
    from hwprune.importers import load_model

    with pytest.raises(ConfigError, match="different model"):
        plan_cost(load_model("lenet300100"), plan)
    with pytest.raises(ConfigError, match="fc9"):
        plan_cost(load_model("lenet300100"), PruningPlan.make("os16x16", {"fc9": "2:4"}))


def test_attention_projections_are_searched_and_products_are_fixed():
    task = load_task("transformer")
    model = task.make_model(0)
    table = build_table(model, task, candidates="dense,2:4", sensitivity="fisher", use_cache=False)
    assert "encoder.layers.0.self_attn.out_proj" in table.layers and table.layers[-1] == "head"
    assert len(table.layers) == 9
    from hwprune.importers import from_torch

    products = [s for s in from_torch(model, task.example_inputs(1)) if not s.has_weights]
    assert table.fixed == sum((candidate_cost([s], ARRAY, None, None) for s in products), Cost(0, 0.0, 0))


def test_make_plan_and_uniform_points(digits):
    task, model = digits
    table = build_table(model, task, candidates="dense,2:4,1:4,unstructured:0.5", use_cache=False)
    sel = solve_exact(table, Budget(fraction=0.6))
    plan = make_plan(table, sel, Budget(fraction=0.6))
    assert plan.search["predicted"]["cycles"] == sel.cost.cycles <= 0.6 * table.reference.cycles
    assert set(plan.layers) == set(table.layers) and plan.model_hash == table.meta.model_hash
    uni = uniform_selection(table, "unstructured:0.5")
    assert uni.cost.cycles == table.reference.cycles  # no cycles saved by scattered zeros
    assert uniform_selection(table, "2:4").cost.cycles < table.reference.cycles


USER_MODULE = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))

def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    y = (x[:, :4].argmax(dim=1))
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=64), DataLoader(ds, batch_size=128)
'''


def test_search_cli_user_model_and_dataloaders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "hwp_search_user.py").write_text(USER_MODULE)
    rc = main(["search", "hwp_search_user:model", "--data", "hwp_search_user:loaders", "--budget", "0.8",
               "--candidates", "dense,2:4,1:4", "--out", "p.json", "--json"])
    assert rc == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert set(out["plan"]["layers"]) == {"0", "2"} and out["selection"]["cycles"] <= out["selection"]["caps"]["cycles"]
    assert main(["search", "hwp_search_user:model", "--budget", "0.8", "--out", "q.json"]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["search", "hwp_search_user:nothing", "--data", "hwp_search_user:loaders", "--budget", "0.8",
                 "--out", "q.json"]) == 2
    assert "nothing" in capsys.readouterr().err


def test_sensitivity_masks_dead_rows_of_any_pattern():
    """A non-channel mask that empties a row also zeroes that row's bias and batch-norm while it is
    measured (as pruning does), and everything is restored afterwards."""
    from torch import nn

    from hwprune.prune.engine import layer_graph, prunable_layers
    from hwprune.search.sensitivity import pruned_layer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(0.5, 1.5)
    targets = prunable_layers(model)
    _, followers = layer_graph(model, (torch.randn(2, 1, 6, 6),), targets)
    mask = np.ones((4, 9), dtype=bool)
    mask[2] = False                                      # e.g. a block pattern emptied row 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pruned_layer(targets["0"], mask, followers):
        assert float(model[0].bias[2]) == 0 and float(model[1].weight[2]) == 0 and float(model[1].bias[2]) == 0
        assert bool((model[0].bias[[0, 1, 3]] != 0).all())
        out = model(torch.randn(2, 1, 6, 6))
        assert bool((out[:, 2] == 0).all())              # the dead channel outputs exactly zero
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
