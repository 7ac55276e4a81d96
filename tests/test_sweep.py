"""hwprune sweep: space files, local and Ray engines, resume, area cache, Pareto fronts."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from hwprune.cli import main
from hwprune.errors import ConfigError
from hwprune.sweep.area import RtlConfig, area_of
from hwprune.sweep.pareto import fronts, pareto_mask, recommend
from hwprune.sweep.run import run_sweep
from hwprune.sweep.space import load_space, space_from_dict

SPACE = """
base = "os8x8"
patterns = ["dense", "2:4"]
[array]
rows = [2, 4]
cols = [2, 4]
dataflow = ["os", "ws"]
"""
MODELS = ["lenet300100"]


@pytest.fixture()
def space(tmp_path):
    p = tmp_path / "space.toml"
    p.write_text(SPACE)
    return load_space(p)


def test_space_is_the_product_of_value_sets_with_ws_is_deduplicated():
    sp = space_from_dict({"array": {"rows": [2, 4], "n": [[1, 2, 4], [4]], "fold_overlap": [False, True],
                                    "dataflow": ["os", "ws"]}})
    # os: 2 rows × 2 N-sets × 2 overlaps = 8; ws ignores n and overlap: 2 rows
    assert len(sp.designs) == 10
    assert {d.slot_options for d in sp.designs if d.dataflow == "ws"} == {(4,)}
    assert not any(d.fold_overlap for d in sp.designs if d.dataflow == "ws")


@pytest.mark.parametrize("text,message", [
    ("rows = 3", "unknown key 'rows'"),
    ("[array]\nrows = 4", "rows must be a non-empty list"),
    ("[array]\nrows = [2]\nn = [[8]]", "N must be ≤ M = 4, not 8"),
    ('patterns = ["5:4"]', "5:4"),
    ("[array\n", "not valid TOML"),
])
def test_bad_space_file_exits_2_with_one_line(tmp_path, capsys, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    assert main(["sweep", "lenet300100", "--space", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "bad.toml" in err
    assert not (tmp_path / "o").exists()


def _table(out):
    return pq.read_table(out / "points.parquet")


def test_ray_and_local_give_identical_tables(tmp_path, space):
    ray = pytest.importorskip("ray")
    local = run_sweep(MODELS, space, tmp_path / "local", engine="local", area=False, accuracy=False, chunk=3)
    try:
        remote = run_sweep(MODELS, space, tmp_path / "ray", engine="ray", area=False, accuracy=False, chunk=3)
    finally:
        ray.shutdown()
    assert local.rows == remote.rows == 8 * 2
    assert _table(tmp_path / "local").equals(_table(tmp_path / "ray"))
    assert local.computed["cost_points"] == remote.computed["cost_points"] == 16


def test_killed_sweep_resumes_without_recomputing(tmp_path, space):
    seen = []

    def stop_after_two(kind, done, total):
        seen.append(kind)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(MODELS, space, tmp_path / "s", area=False, accuracy=False, chunk=3, on_progress=stop_after_two)
    done = sum(pq.read_table(p).num_rows for p in (tmp_path / "s" / "parts").glob("cost-*.parquet"))
    assert done == 6                                  # two tasks of three points each were written
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(MODELS, space, tmp_path / "s", area=False, accuracy=False)
    again = run_sweep(MODELS, space, tmp_path / "s", resume=True, area=False, accuracy=False, chunk=3)
    assert again.skipped["cost_points"] == 6 and again.computed["cost_points"] == 16 - 6
    run_sweep(MODELS, space, tmp_path / "fresh", area=False, accuracy=False)
    assert _table(tmp_path / "s").equals(_table(tmp_path / "fresh"))
    # nothing left: a second resume computes nothing
    assert run_sweep(MODELS, space, tmp_path / "s", resume=True, area=False, accuracy=False).computed == {
        "cost_points": 0, "area_configs": 0, "yosys_runs": 0, "accuracy": 0, "plans": 0}


def test_resume_refuses_another_space(tmp_path, space):
    run_sweep(MODELS, space, tmp_path / "s", area=False, accuracy=False)
    other = space_from_dict({"array": {"rows": [2]}})
    with pytest.raises(ConfigError, match="another space"):
        run_sweep(MODELS, other, tmp_path / "s", resume=True, area=False, accuracy=False)


def test_area_is_cached_by_config_hash(tmp_path, monkeypatch):
    from hwprune import load_array
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path))
    rc = RtlConfig.of(load_array("os8x8").replace(rows=2, cols=2, slot_options=(4,)))
    first = area_of(rc, ice40=False, fmax=False)
    assert not first["cached"] and first["multipliers"] == 4 and first["cells"] > 100
    assert (tmp_path / "area" / f"{rc.key}.json").is_file()

    def no_yosys(*a, **k):
        raise AssertionError("yosys ran again")
    monkeypatch.setattr("hwprune.rtl.emit.synth_stats", no_yosys)
    second = area_of(rc, ice40=False, fmax=False)
    assert second["cached"] and second["cells"] == first["cells"]
    # a sweep over that design takes its cells from the cache: one area task, no yosys run
    sp = space_from_dict({"base": "os8x8", "array": {"rows": [2], "cols": [2], "n": [[4]]}})
    res = run_sweep(MODELS, sp, tmp_path / "s", area=True, ice40=False, accuracy=False)
    assert (res.computed["area_configs"], res.computed["yosys_runs"]) == (1, 0)
    assert pq.read_table(tmp_path / "s" / "points.parquet").column("cells").to_pylist() == [first["cells"]]
    # a WS array of the same shape is costed as the dense OS array: the same RTL config
    assert RtlConfig.of(load_array("os8x8").replace(rows=2, cols=2, dataflow="ws")).key == rc.key
    assert RtlConfig.of(load_array("os8x8").replace(rows=2, cols=2)).key != rc.key


def test_pareto_mask_by_hand():
    v = np.array([[1, 5], [2, 2], [3, 3], [5, 1], [2, 2], [1, 6]])
    # (3,3) is dominated by (2,2); (1,6) by (1,5); the duplicate (2,2) stays
    assert pareto_mask(v).tolist() == [True, True, False, True, True, False]


def test_recommendation_respects_budget_and_accuracy():
    base = {"model": "m", "ok": True, "energy_pj": 1.0, "dense_accuracy": 0.95, "fmax_mhz": None}
    rows = [dict(base, point="a", name="big", pattern="dense", cells=1000, cycles=10, accuracy=0.95),
            dict(base, point="b", name="small", pattern="2:4", cells=100, cycles=50, accuracy=0.945),
            dict(base, point="c", name="small", pattern="1:4", cells=100, cycles=20, accuracy=0.80)]
    marked = fronts(rows)["m"]
    assert all(r["on_front"] for r in marked)
    recs = recommend(marked, budgets=[100, 1000], max_drop=0.01)
    assert [r["point"] for r in recs] == ["b", "a"]    # c is faster but loses 15 points
    assert "build small and run 2:4" in recs[0]["line"]


def test_cli_writes_table_fronts_and_plots(tmp_path, capsys):
    p = tmp_path / "space.toml"
    p.write_text(SPACE)
    out = tmp_path / "o"
    assert main(["sweep", "lenet300100", "--space", str(p), "--out", str(out), "--no-area", "--no-accuracy",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["points"] == 16 and info["models"]["lenet300100"]["front_size"] >= 1
    assert "lenet300100" in info["models"]["lenet300100"]["recommendations"][0]
    assert (out / "fronts.csv").is_file() and json.loads((out / "fronts.json").read_text())["models"]
    assert sorted(x.name for x in (out / "plots").glob("*.png")) == [
        "lenet300100_cycles_vs_memory_bits.png", "lenet300100_energy_vs_cycles.png"]
    # ws points carry the 2:4 pattern costed dense, and say so
    t = pq.read_table(out / "points.parquet").to_pylist()
    ws24 = [r for r in t if r["dataflow"] == "ws" and r["pattern"] == "2:4"]
    ws = {r["design"]: r["cycles"] for r in t if r["dataflow"] == "ws" and r["pattern"] == "dense"}
    assert ws24 and all(r["sparse_costed_dense"] and r["cycles"] == ws[r["design"]] for r in ws24)


def test_search_plan_points_cost_their_per_layer_patterns():
    import json as _json

    from hwprune import estimate_model, load_array, parse_pattern
    from hwprune.sweep.run import cost_task, model_specs
    specs = model_specs("digits_cnn")
    weighted = [s.name for s in specs if s.has_weights]
    chosen = {weighted[0]: "1:4", weighted[-1]: "2:4"}        # the rest stay dense
    plan = {"plan": "digits_cnn|search@0.5|m4n1,2,4", "patterns": _json.dumps(chosen)}
    designs = (load_array("os8x8").replace(rows=4, cols=4), load_array("os8x8"))
    rows = cost_task("digits_cnn", "search@0.5", specs, designs, plan)
    want = [estimate_model(specs, d, patterns={k: parse_pattern(v) for k, v in chosen.items()}) for d in designs]
    assert [r["cycles"] for r in rows] == [w.cycles for w in want]
    assert all(r["plan"] == plan["plan"] and r["pattern"] == "search@0.5" for r in rows)


def test_search_needs_a_task_model(tmp_path):
    sp = space_from_dict({"array": {"rows": [2]}, "models": {"resnet18": {"search": {"budgets": [0.5]}}}})
    with pytest.raises(ConfigError, match="built-in task"):
        run_sweep(["resnet18"], sp, tmp_path / "o", area=False, accuracy=False)


def test_example_space_file_loads():
    from pathlib import Path
    sp = load_space(Path(__file__).parent.parent / "examples" / "space.toml")
    # os: 2 rows × 2 cols × 2 N-sets × 2 overlaps × 2 × 2 SRAM = 64; ws and is: 2 × 2 × 2 × 2 = 16 each
    assert len(sp.designs) == 96 and sp.search_budgets == {"digits_cnn": (0.5,)}


def test_area_cache_is_stale_once_the_generators_change(tmp_path, monkeypatch):
    """A cached synthesis of other RTL generators (hwprune/rtl edited since) is redone."""
    from hwprune import load_array
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path))
    rc = RtlConfig.of(load_array("os8x8").replace(rows=2, cols=2, slot_options=(4,)))
    fake = {"total": {"cells": 123, "flip_flops": 4, "multipliers": 4}}
    monkeypatch.setattr("hwprune.rtl.emit.synth_stats", lambda *a, **k: fake)
    assert area_of(rc, ice40=False, fmax=False)["cells"] == 123
    path = tmp_path / "area" / f"{rc.key}.json"
    entry = json.loads(path.read_text())
    assert area_of(rc, ice40=False, fmax=False)["cached"]
    path.write_text(json.dumps({**entry, "rtl_sources": "0" * 64, "cells": 999}))
    fake["total"]["cells"] = 456
    again = area_of(rc, ice40=False, fmax=False)
    assert not again["cached"] and again["cells"] == 456
