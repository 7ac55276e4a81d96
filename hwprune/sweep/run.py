"""Run a sweep: pure tasks, in-process or on Ray, streamed into a resumable Parquet table.

Three kinds of task, each a pure function of its arguments (so it runs the same in-process, in a
test and as a Ray task):

* :func:`cost_task` — one (model, pattern) on a chunk of design points, through the vectorised
  cost model (:func:`~hwprune.sweep.vector.cost_batch`): the cheap work, batched;
* :func:`area_task` — yosys/nextpnr of one distinct RTL config (cached on disk by config hash);
* :func:`accuracy_task` — a short fine-tune of one (model, pattern) for models that are built-in
  tasks (``hwprune.tasks``); other models have no accuracy (null).

Every finished task is written at once as its own Parquet file under ``DIR/parts/`` (temporary
file, then rename), keyed by its points: ``cost-*`` files hold one row per point (design ×
model × pattern), ``area-*`` one row per RTL config, ``acc-*`` one row per (model, pattern).  An
interrupted sweep restarted with ``resume`` reads the keys already there and submits only the
rest; :attr:`SweepResult.computed` counts what this run computed.  At the end the parts are joined
into ``DIR/points.parquet`` (sorted by point, so the engines give identical tables).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ArrayConfig
from ..errors import ConfigError
from ..io import write_text, write_with
from ..ir import LayerSpec
from ..patterns import parse_pattern
from .area import RtlConfig, area_of, memory_bits
from .space import Space, design_id
from .vector import cost_batch

__all__ = ["SweepResult", "run_sweep", "cost_task", "area_task", "accuracy_task", "plan_task", "ENGINES", "model_specs"]

ENGINES = ("local", "ray")
_CHUNK = 512


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep produced: the joined table's path and rows, and what this run computed."""

    out: Path
    rows: int
    computed: dict[str, int]
    skipped: dict[str, int]
    seconds: float
    engine: str
    extra: dict[str, Any] = field(default_factory=dict)


def point_key(model: str, pattern: str, design: str) -> str:
    return f"{model}|{pattern}|{design}"


def model_specs(model: str) -> tuple[LayerSpec, ...]:
    """A model's layers without weights (pattern-level costing never reads them): small to ship."""
    from ..importers import load_model
    return tuple(dataclasses.replace(s, weight=None) for s in load_model(model))


def cost_task(model: str, pattern: str, specs: Sequence[LayerSpec], designs: Sequence[ArrayConfig],
              plan: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per design: cycles, energy, bytes and what identifies the point.

    ``pattern`` is a uniform pattern, or ``search@B`` with ``plan`` a row of :func:`plan_task`
    (its per-layer patterns; layers it does not name stay dense).
    """
    if plan is None:
        cost = cost_batch(specs, designs, parse_pattern(pattern))
    else:
        chosen = {k: parse_pattern(v) for k, v in json.loads(plan["patterns"]).items()}
        per_layer = {s.name: chosen[s.name.split("#", 1)[0]] for s in specs
                     if s.has_weights and s.name.split("#", 1)[0] in chosen}
        cost = cost_batch(specs, designs, patterns=per_layer)
    tot = {k: cost.total(k) for k in ("cycles", "compute_cycles", "stall_cycles", "energy_pj", "sram",
                                      "dram", "weights_dram", "index_dram", "macs_nonzero")}
    ok = cost.ok
    rows = []
    for p, cfg in enumerate(designs):
        did = design_id(cfg)
        good = bool(ok[p])
        rows.append({
            "point": point_key(model, pattern, did), "model": model, "pattern": pattern, "design": did,
            "name": cfg.name, "dataflow": cfg.dataflow, "rows": cfg.rows, "cols": cfg.cols,
            "m": cfg.group_size, "n_set": ",".join(map(str, cfg.slot_options)),
            "fold_overlap": cfg.fold_overlap, "weight_sram_kib": cfg.weight_sram_kib,
            "act_sram_kib": cfg.act_sram_kib, "out_sram_kib": cfg.out_sram_kib, "clock_mhz": cfg.clock_mhz,
            "rtl": RtlConfig.of(cfg).key, "memory_bits": memory_bits(cfg), "ok": good,
            "cycles": int(tot["cycles"][p]) if good else None,
            "compute_cycles": int(tot["compute_cycles"][p]) if good else None,
            "stall_cycles": int(tot["stall_cycles"][p]) if good else None,
            "energy_pj": float(tot["energy_pj"][p]) if good else None,
            "sram_bytes": int(tot["sram"][p]) if good else None,
            "dram_bytes": int(tot["dram"][p]) if good else None,
            "weight_bytes": int(tot["weights_dram"][p] + tot["index_dram"][p]) if good else None,
            "macs_nonzero": int(tot["macs_nonzero"][p]) if good else None,
            "sparse_costed_dense": cfg.dataflow != "os" and pattern != "dense",
            "plan": plan["plan"] if plan else None,
        })
    return rows


def area_task(rc: RtlConfig, ice40: bool, fmax: bool) -> dict[str, Any]:
    """The silicon row of one RTL config (see :mod:`hwprune.sweep.area`)."""
    a = area_of(rc, ice40=ice40, fmax=fmax)
    keys = ("cells", "flip_flops", "multipliers", "ice40_lut4", "ice40_dff", "ice40_carry", "ice40_mac16",
            "fmax_mhz", "fmax_array_mhz", "fmax_controller_mhz")
    return {"rtl": rc.key, **{k: a.get(k) for k in keys}, "from_cache": bool(a["cached"])}


def accuracy_task(model: str, pattern: str, epochs: int) -> dict[str, Any]:
    """Test accuracy of ``model`` (a built-in task) pruned to ``pattern`` after ``epochs`` of
    fine-tuning, and of the trained dense model; null for models that are not tasks."""
    from ..tasks import task_names
    row: dict[str, Any] = {"acc_key": f"{model}|{pattern}", "accuracy": None, "dense_accuracy": None}
    if model not in task_names():
        return row
    from ..prune import prune_model
    from ..tasks import load_task
    from ..train import evaluate, train_task
    task = load_task(model)
    net, _ = train_task(task, seed=0)
    row["dense_accuracy"] = float(evaluate(net, task))
    if parse_pattern(pattern).kind == "dense":
        row["accuracy"] = row["dense_accuracy"]
    else:
        result = prune_model(net, pattern, data=task, finetune_epochs=epochs, seed=0)
        row["accuracy"] = float(evaluate(result.model, task))
    return row


def plan_task(model: str, budget: float, array: ArrayConfig, epochs: int) -> dict[str, Any]:
    """``hwprune.search`` of ``model`` (a built-in task) at ``budget`` (fraction of dense cycles)
    on ``array``, and the test accuracy of the plan after ``epochs`` of fine-tuning."""
    from ..prune import prune_model
    from ..search import search
    from ..tasks import load_task
    from ..train import evaluate, train_task
    task = load_task(model)
    net, _ = train_task(task, seed=0)
    dense = float(evaluate(net, task))
    result = search(net, task, array, budget, seed=0)
    plan = result.plan
    pruned = prune_model(net, plan=plan, data=task, finetune_epochs=epochs, seed=0)
    return {"plan": plan_key(model, budget, array), "patterns": json.dumps({k: str(v) for k, v in plan.layers.items()}),
            "accuracy": float(evaluate(pruned.model, task)), "dense_accuracy": dense}


def plan_key(model: str, budget: float, array: ArrayConfig) -> str:
    """One plan per (model, budget, N:M hardware): searched on the first such design."""
    return f"{model}|search@{budget:g}|m{array.group_size}n{','.join(map(str, array.slot_options))}"


def _plan_groups(designs: Sequence[ArrayConfig]) -> dict[tuple, list[ArrayConfig]]:
    groups: dict[tuple, list[ArrayConfig]] = {}
    for d in designs:
        if d.dataflow == "os":   # WS/IS cannot exploit a plan: they are not searched
            groups.setdefault((d.group_size, d.slot_options), []).append(d)
    return groups


# -- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Task:
    kind: str            # "cost", "area" or "acc"
    name: str            # part file stem
    fn: Callable[..., Any]
    args: tuple


def run_sweep(models: Sequence[str], space: Space, out: str | Path, *, engine: str = "local",
              address: str | None = None, resume: bool = False, force: bool = False,
              area: bool = True, ice40: bool = True, fmax: bool = False, accuracy: bool = True,
              chunk: int = _CHUNK, on_progress: Callable[[str, int, int], None] | None = None) -> SweepResult:
    """Evaluate ``models`` over ``space`` into ``out`` (see the module docstring).

    Parameters
    ----------
    models : sequence of str
        Zoo names, .onnx, SCALE-Sim .csv or checkpoints (anything ``hwprune estimate`` takes).
    space : Space
        From :func:`hwprune.sweep.space.load_space`.
    out : path
        Output directory; must not hold another sweep unless ``resume`` or ``force``.
    engine : ``"local"`` or ``"ray"``
        In-process, or Ray tasks (a local ``ray.init(num_cpus=2)`` unless ``address``).
    area, ice40, fmax, accuracy : bool
        Which heavy tasks to run (yosys cells; iCE40 LUT/FF; nextpnr fmax; fine-tunes).
    on_progress : callable, optional
        Called ``(kind, done, total)`` after every finished task (progress bars; a callback
        that raises stops the sweep, and ``resume`` carries on from there).
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive integer, not {chunk!r}")
    budgets = {m: b for m, b in (space.search_budgets or {}).items() if m in models}
    if budgets:
        from ..tasks import task_names
        bad = [m for m in budgets if m not in task_names()]
        if bad:
            raise ConfigError(f"search needs a built-in task's data; {bad[0]!r} is not one ({', '.join(task_names())})")
    t0 = time.perf_counter()
    space = space.for_models(list(models))
    out = Path(out)
    parts = out / "parts"
    manifest = {"models": list(models), "designs": sorted(design_id(d) for d in space.designs),
                "patterns": {m: list(p) for m, p in space.patterns.items()},
                "finetune_epochs": space.finetune_epochs, "area": area, "ice40": ice40, "fmax": fmax,
                "accuracy": accuracy, "search": {m: list(b) for m, b in budgets.items()}}
    _prepare(out, manifest, resume=resume, force=force)
    done = _done_keys(parts)
    # area_configs counts area tasks; yosys_runs those the disk cache could not answer
    computed = {"cost_points": 0, "area_configs": 0, "yosys_runs": 0, "accuracy": 0, "plans": 0}
    skipped = {"cost_points": 0, "area_configs": 0, "accuracy": 0, "plans": 0}
    plans = _run_plans(models, budgets, space, parts, done, engine, address, computed, skipped, on_progress)

    tasks: list[_Task] = []
    specs = {m: model_specs(m) for m in models}
    for m in models:
        for pattern in space.patterns[m]:
            todo = [d for d in space.designs if point_key(m, pattern, design_id(d)) not in done["point"]]
            skipped["cost_points"] += len(space.designs) - len(todo)
            for i in range(0, len(todo), chunk):
                group = todo[i:i + chunk]
                name = "cost-" + _digest([point_key(m, pattern, design_id(d)) for d in group])
                tasks.append(_Task("cost", name, cost_task, (m, pattern, specs[m], tuple(group))))
            if accuracy:
                if f"{m}|{pattern}" in done["acc_key"]:
                    skipped["accuracy"] += 1
                else:
                    tasks.append(_Task("acc", "acc-" + _digest([m, pattern]), accuracy_task,
                                       (m, pattern, space.finetune_epochs)))
        for b in budgets.get(m, ()):
            for group in _plan_groups(space.designs).values():
                plan = plans[plan_key(m, b, group[0])]
                label = f"search@{b:g}"
                todo = [d for d in group if point_key(m, label, design_id(d)) not in done["point"]]
                skipped["cost_points"] += len(group) - len(todo)
                for i in range(0, len(todo), chunk):
                    part = todo[i:i + chunk]
                    name = "cost-" + _digest([point_key(m, label, design_id(d)) for d in part])
                    tasks.append(_Task("cost", name, cost_task, (m, label, specs[m], tuple(part), plan)))
    if area:
        for rc in sorted({RtlConfig.of(d) for d in space.designs}, key=lambda r: r.key):
            if rc.key in done["rtl"]:
                skipped["area_configs"] += 1
            else:
                tasks.append(_Task("area", f"area-{rc.key}", area_task, (rc, ice40, fmax)))

    counts = {"cost": "cost_points", "area": "area_configs", "acc": "accuracy"}
    totals: dict[str, int] = {}
    for t in tasks:
        totals[t.kind] = totals.get(t.kind, 0) + 1
    finished: dict[str, int] = {k: 0 for k in totals}
    runner = _run_ray(tasks, address) if engine == "ray" else _run_local(tasks)
    for task, result in runner:
        rows = result if isinstance(result, list) else [result]
        _write_part(parts / f"{task.name}.parquet", rows)
        computed[counts[task.kind]] += len(rows) if task.kind == "cost" else 1
        if task.kind == "area" and not rows[0]["from_cache"]:
            computed["yosys_runs"] += 1
        finished[task.kind] += 1
        if on_progress is not None:
            on_progress(task.kind, finished[task.kind], totals[task.kind])
    n = _join(out, parts)
    return SweepResult(out, n, computed, skipped, time.perf_counter() - t0, engine)


def _run_plans(models: Sequence[str], budgets: dict[str, tuple[float, ...]], space: Space, parts: Path,
               done: dict[str, set[str]], engine: str, address: str | None, computed: dict[str, int],
               skipped: dict[str, int], on_progress: Callable[[str, int, int], None] | None) -> dict[str, dict]:
    """Phase one: the search plans the cost tasks of ``search@B`` points need (resumable too)."""
    import pyarrow.parquet as pq
    tasks = []
    for m in models:
        for b in budgets.get(m, ()):
            for group in _plan_groups(space.designs).values():
                key = plan_key(m, b, group[0])
                if key in done["plan"]:
                    skipped["plans"] += 1
                else:
                    tasks.append(_Task("plan", "plan-" + _digest([key]), plan_task,
                                       (m, b, group[0], space.finetune_epochs)))
    runner = _run_ray(tasks, address) if engine == "ray" else _run_local(tasks)
    for i, (task, row) in enumerate(runner, 1):
        _write_part(parts / f"{task.name}.parquet", [row])
        computed["plans"] += 1
        if on_progress is not None:
            on_progress("plan", i, len(tasks))
    plans = {}
    for p in sorted(parts.glob("plan-*.parquet")):
        for row in pq.read_table(p).to_pylist():
            plans[row["plan"]] = row
    return plans


def _digest(items: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def _prepare(out: Path, manifest: dict[str, Any], *, resume: bool, force: bool) -> None:
    path = out / "sweep.json"
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    if path.is_file():
        if resume:
            if json.loads(path.read_text()) != manifest:
                raise ConfigError(f"{out} holds a sweep of another space or models; --resume needs the same "
                                  "ones (or pass --force to start over)")
            return
        if not force:
            raise ConfigError(f"{out} already holds a sweep; pass --resume to continue it or --force to start over")
        for p in (out / "parts").glob("*.parquet"):
            p.unlink()
    elif out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} exists and is not a sweep directory; pass --force to use it")
    (out / "parts").mkdir(parents=True, exist_ok=True)
    write_text(path, text, force=True)


def _done_keys(parts: Path) -> dict[str, set[str]]:
    import pyarrow.parquet as pq
    done: dict[str, set[str]] = {"point": set(), "rtl": set(), "acc_key": set(), "plan": set()}
    for p in sorted(parts.glob("*.parquet")):
        col = {"cost": "point", "area": "rtl", "acc": "acc_key", "plan": "plan"}[p.name.split("-")[0]]
        done[col].update(pq.read_table(p, columns=[col]).column(col).to_pylist())
    return done


def _write_part(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.Table.from_pylist(rows)
    write_with(path, lambda tmp: pq.write_table(table, tmp), force=True)


def _run_local(tasks: Sequence[_Task]) -> Iterator[tuple[_Task, Any]]:
    for t in tasks:
        yield t, t.fn(*t.args)


def _run_ray(tasks: Sequence[_Task], address: str | None) -> Iterator[tuple[_Task, Any]]:
    import ray
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = {}
        pending = {}
        shared: dict[int, Any] = {}
        for t in tasks:
            fn = remote.setdefault(t.fn, ray.remote(t.fn))
            # large arguments (a model's layers) go to the object store once, not once per task
            args = tuple(_shared(shared, a, ray.put) if isinstance(a, tuple) else a
                         for a in t.args)
            pending[fn.remote(*args)] = t
        del shared
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            t = pending.pop(ready[0])
            yield t, ray.get(ready[0])
    finally:
        if started:
            ray.shutdown()


def _shared(cache: dict[int, Any], value: Any, put: Callable[[Any], Any]) -> Any:
    if id(value) not in cache:
        cache[id(value)] = put(value)
    return cache[id(value)]


_ROW_TABLES = ("cost", "area", "acc", "plan")


def _join(out: Path, parts: Path) -> int:
    """``points.parquet``: cost rows with their RTL config's area and their accuracy, by point."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    tables: dict[str, list[dict[str, Any]]] = {k: [] for k in _ROW_TABLES}
    for p in sorted(parts.glob("*.parquet")):
        tables[p.name.split("-")[0]].extend(pq.read_table(p).to_pylist())
    area = {r["rtl"]: r for r in tables["area"]}
    acc = {r["acc_key"]: r for r in tables["acc"]} | {r["plan"]: r for r in tables["plan"]}
    rows = []
    empty_area = {k: None for k in ("cells", "flip_flops", "multipliers", "ice40_lut4", "ice40_dff",
                                    "ice40_carry", "ice40_mac16", "fmax_mhz", "fmax_array_mhz",
                                    "fmax_controller_mhz")}
    for r in sorted(tables["cost"], key=lambda r: r["point"]):
        a = area.get(r["rtl"], {})
        c = acc.get(r.get("plan") or f"{r['model']}|{r['pattern']}", {})
        rows.append({**r, **{k: a.get(k) for k in empty_area},
                     "accuracy": c.get("accuracy"), "dense_accuracy": c.get("dense_accuracy")})
    schema = None
    if rows:
        schema = pa.Table.from_pylist(rows).schema
    table = pa.Table.from_pylist(rows, schema=schema)
    write_with(out / "points.parquet", lambda tmp: pq.write_table(table, tmp), force=True)
    return len(rows)


def read_points(out: str | Path):
    """The joined table of a finished sweep as a pyarrow Table."""
    import pyarrow.parquet as pq
    path = Path(out) / "points.parquet"
    if not path.is_file():
        raise ConfigError(f"{out} has no points.parquet: run the sweep first")
    return pq.read_table(path)


__all__ += ["read_points", "point_key"]
