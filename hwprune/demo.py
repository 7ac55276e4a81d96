"""``hwprune demo``: the whole flow on built-in data, each stage a small timed function.

train the digits CNN (fp32) → estimate it dense on the array → choose a plan under a cycle
budget → prune and fine-tune by the plan → int8 → export → RTL (+ yosys cells) → run the pruned
layers on the Verilator-simulated array, checked bit for bit and cycle for cycle.

Every stage records its wall time, a status (done, or failed when its check did not hold) and
one line saying what it did.  The run
builds in a temporary sibling directory and renames it onto ``out`` at the end, so a failed or
interrupted run leaves nothing half-written; ``summary.json`` holds every figure and
``report.html`` (:mod:`hwprune.report`) is rendered from it alone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ArrayConfig, load_array
from .errors import ConfigError, ExportError, VerificationError
from .io import write_text

__all__ = ["STAGES", "DemoEvents", "DemoOptions", "StageRecord", "run_demo"]

TASK = "digits_cnn"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``hwprune demo`` runs.

    Parameters
    ----------
    out : path
        Output directory (refused when it exists and is not empty, unless ``force``).
    array : str
        Array preset or TOML file.
    budget : float
        Cycle budget as a fraction of the dense model's cycles, in (0, 1].
    seed : int
        Training, pruning and simulation seed.
    epochs : int, optional
        Training epochs (default: the task's recipe).
    finetune_epochs : int
        Fine-tuning epochs after pruning.
    images : int, optional
        Test images run through the simulated RTL (default: the whole test set).
    criterion : str
        Pruning criterion (:mod:`hwprune.prune.criteria`).
    stats : bool
        Run yosys synthesis for cell counts (about 30 s per design on 2 cores).
    force : bool
        Replace an existing ``out``.
    """

    out: Path = Path("hwprune_demo")
    array: str = "os8x8"
    budget: float = 0.5
    seed: int = 0
    epochs: int | None = None
    finetune_epochs: int = 5
    images: int | None = None
    criterion: str = "l1"
    stats: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not 0 < self.budget <= 1:
            raise ConfigError(f"budget must be a fraction of the dense cycles in (0, 1], not {self.budget!r}")
        for name in ("epochs", "images"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) \
                or self.finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs must be a non-negative integer, not {self.finetune_epochs!r}")


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage's outcome: ``status`` is done, or failed (it ran and its check did not hold)."""

    name: str
    status: str
    seconds: float
    note: str
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3), "note": self.note}


class DemoEvents:
    """Progress hooks of :func:`run_demo` (no-ops: library calls are silent).  The CLI overrides
    them with rich progress bars."""

    def start(self, stage: str, total: int | None) -> None:
        """A stage begins; ``total`` steps when known."""

    def advance(self, steps: int = 1) -> None:
        """The running stage made ``steps`` steps."""

    def finish(self, record: StageRecord) -> None:
        """A stage ended."""


@dataclass(slots=True)
class _Run:
    """State handed from stage to stage within one run (never outlives :func:`run_demo`)."""

    options: DemoOptions
    array: ArrayConfig
    work: Path
    events: DemoEvents
    summary: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)

    def file(self, rel: str) -> Path:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class _Failed(Exception):
    """A stage ran and its check failed (recorded as ``failed``; the run goes on to the report)."""


# -- stages ------------------------------------------------------------------------------------

def _train(run: _Run) -> str:
    from .tasks import load_task
    from .train import evaluate, steps_per_epoch, train

    task = load_task(TASK)
    epochs = run.options.epochs if run.options.epochs is not None else task.epochs
    run.events.start("train", epochs * steps_per_epoch(task))
    model = task.make_model(run.options.seed)
    train(model, task, epochs=epochs, seed=run.options.seed, on_step=lambda _: run.events.advance())
    acc = evaluate(model, task, "test")
    run.objects.update(task=task, fp32=model)
    run.summary["accuracy"] = {"fp32": acc, "test_images": len(task.test)}
    return f"{TASK}: {epochs} epochs, fp32 test accuracy {acc:.2%} on {len(task.test)} images"


def _estimate(run: _Run) -> str:
    from .metrics import hardware_cost

    task, model = run.objects["task"], run.objects["fp32"]
    run.events.start("estimate", None)
    dense = hardware_cost(model, task.example_inputs(1), run.array)
    run.objects["dense_cost"] = dense
    run.summary["cost"] = {"dense": dense.to_dict()}
    return f"{len(dense.layers)} layers, {dense.cycles:,} cycles dense per image on {run.array.name}"


def _search(run: _Run) -> str:
    run.events.start("search", None)
    budget_cycles = int(run.options.budget * run.objects["dense_cost"].cycles)
    from .search import Budget, search

    # the demo's RTL builds dense and native N:M designs only: those are the candidates
    gs = run.array.group_size
    cands = ",".join(["dense", *(f"{n}:{gs}" for n in sorted(run.array.slot_options, reverse=True) if n < gs)])
    result = search(run.objects["fp32"], run.objects["task"], run.array, Budget(fraction=run.options.budget),
                    criterion=run.options.criterion, candidates=cands, seed=run.options.seed)
    sel, front = result.selection, result.pareto()
    layers = {name: str(p) for name, p in result.plan.layers.items() if str(p) != "dense"}  # unlisted: dense
    note = (f"exact MILP over {cands}: {sel.cost.cycles:,} cycles predicted, summed one-shot val-loss "
            f"increase {sel.loss:+.4f}; {result.table.meta.measured} sensitivities measured, "
            f"{result.table.meta.reused} from the cache")
    run.summary["plan"] = {"source": "hwprune.search (exact)", "budget": run.options.budget,
                           "budget_cycles": budget_cycles, "layers": layers, "note": note,
                           "predicted_cycles": sel.cost.cycles}

    def points(series):
        return [{"cycles": p.cycles, "loss": p.loss, "accuracy": p.accuracy,
                 "pattern": p.method.removeprefix("uniform ")} for p in series]
    run.summary["search"] = {"pareto": points(front.exact), "greedy": points(front.greedy),
                             "uniform": points(front.uniform), "chosen": {"cycles": sel.cost.cycles, "loss": sel.loss},
                             "budget_cycles": budget_cycles, "loss_label": "predicted val-loss increase (nats)"}
    run.objects["plan_layers"] = layers
    return note


def _prune(run: _Run) -> str:
    from .metrics import hardware_cost
    from .prune import PruningPlan, prune_model
    from .report.plots import pack_mask
    from .train import clone_model, evaluate

    task = run.objects["task"]
    run.events.start("prune", None)
    plan = PruningPlan.make(run.array.name, run.objects["plan_layers"])
    model = clone_model(run.objects["fp32"])
    res = prune_model(model, task, criterion=run.options.criterion, plan=plan,
                      finetune_epochs=run.options.finetune_epochs, seed=run.options.seed)
    acc = evaluate(model, task, "test")
    cost = hardware_cost(model, task.example_inputs(1), run.array)
    run.objects.update(pruned=model, plan=plan, plan_cost=cost)
    run.summary["accuracy"]["pruned"] = acc
    run.summary["cost"]["plan"] = cost.to_dict()
    run.summary["masks"] = {name: {"pattern": str(res.patterns.get(name, "dense")), **pack_mask(mask)}
                            for name, mask in res.masks.items()}
    dense = run.objects["dense_cost"]
    return (f"{run.options.criterion} criterion, {run.options.finetune_epochs} fine-tune epochs: "
            f"accuracy {acc:.2%}, {dense.cycles:,} → {cost.cycles:,} cycles ({dense.cycles / cost.cycles:.2f}×)")


def _quantize(run: _Run) -> str:
    from .quant import evaluate_int, quantize

    task = run.objects["task"]
    run.events.start("int8", None)
    qmodel = quantize(run.objects["pruned"], task, array=run.array, patterns=dict(run.objects["plan"].layers))
    acc = evaluate_int(qmodel, task)
    run.objects["qmodel"] = qmodel
    run.summary["accuracy"]["int8"] = acc
    run.summary["quant"] = {"input_scale": qmodel.input_scale, "calibration": qmodel.calibration.to_dict()}
    cal = qmodel.calibration
    return (f"per-channel int8 weights, per-tensor int8 activations ({cal.method} {cal.percentile:g} "
            f"calibration): integer-reference accuracy {acc:.2%}")


def _export(run: _Run) -> str:
    from .checkpoint import save_checkpoint
    from .export import export_model, load_export, run_onnx
    from .export.bundle import ONNX_FORMATS
    from .export.sizes import layer_weight_bytes
    from .prune import save_plan

    run.events.start("export", None)
    task, qmodel = run.objects["task"], run.objects["qmodel"]
    save_checkpoint(run.file("fp32.pt"), run.objects["fp32"], arch=task.arch, task=task, patterns=None,
                    masks=None, metrics={"accuracy": run.summary["accuracy"]["fp32"]})
    save_checkpoint(run.file("pruned.pt"), run.objects["pruned"], arch=task.arch, task=task,
                    patterns=dict(run.objects["plan"].layers), masks=None,
                    metrics={"accuracy": run.summary["accuracy"]["pruned"]})
    save_plan(run.file("plan.json"), run.objects["plan"])
    x, y = task.test.inputs[0], task.test.targets.numpy()
    # the memory images hold one test image's activations and expected outputs (it fits any preset)
    res = export_model(run.objects["pruned"], qmodel, x[:1], run.array, run.work / "export",
                       patterns=dict(run.objects["plan"].layers), source="hwprune demo")
    checked = load_export(res.root).files_checked
    qdq = float((run_onnx(res.root / ONNX_FORMATS["qdq"], x).argmax(axis=1) == y).mean())
    run.summary["accuracy"]["ort_qdq"] = qdq
    sizes = layer_weight_bytes(qmodel, run.array)
    run.summary["weight_bytes"] = {"dense": int(sum(r["dense_int8"] for r in sizes)),
                                   "plan": int(sum(r["nm_int8"] for r in sizes)),
                                   "basis": "int8 weight memory images (values + N:M indices), biases excluded",
                                   "layers": sizes}
    return (f"checkpoints, plan, float + QDQ ONNX and {len(res.files) - 2} memory-image files with a "
            f"manifest ({checked} files re-verified); onnxruntime QDQ accuracy {qdq:.2%}")


def _designs(run: _Run) -> dict[int, str]:
    """Issue width → pattern text of every design the plan's layers need."""
    from .rtl.emit import design_slots

    out: dict[int, str] = {}
    patterns = list(run.objects["plan"].layers.values())
    if len(patterns) < len(run.objects["dense_cost"].layers):
        patterns.append("dense")                              # layers the plan leaves out
    for pattern in patterns:
        slots = design_slots(run.array, pattern)
        out.setdefault(slots, f"{slots}:{run.array.group_size}" if slots < run.array.group_size else "dense")
    return dict(sorted(out.items()))


def _rtl(run: _Run) -> str:
    from .rtl.emit import TOP_NAME, describe, synth_stats, verilog

    designs = _designs(run)
    run.events.start("rtl", len(designs))
    # issue widths whose generated hardware is the same (the slot count can live in the memory
    # images, not in the logic) share one design: one file, one synthesis
    groups: dict[str, dict[str, Any]] = {}
    for slots, name in designs.items():
        text = verilog(run.array, slots)
        key = hashlib.sha256(text.encode()).hexdigest()
        groups.setdefault(key, {"text": text, "slots": slots, "patterns": []})["patterns"].append(name)
    stats: dict[str, Any] = dict.fromkeys(groups)
    if run.options.stats:
        # yosys runs in a subprocess: one per design, side by side
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {k: pool.submit(synth_stats, run.array, g["slots"]) for k, g in groups.items()}
            stats = {k: f.result() for k, f in futures.items()}
    rows = []
    for key, g in groups.items():
        tag = "_".join(p.replace(":", "of") for p in g["patterns"])
        v = f"rtl/{TOP_NAME}_{tag}.v"
        info = describe(run.array, g["slots"])
        write_text(run.file(v), g["text"])
        info["stats"] = stats[key]
        write_text(run.file(f"rtl/{TOP_NAME}_{tag}.json"), json.dumps(info, indent=2) + "\n")
        rows.append({"pattern": ", ".join(g["patterns"]), "slots": g["slots"], "verilog": v, "stats": stats[key]})
        run.events.advance(len(g["patterns"]))
    run.summary["rtl"] = {"designs": rows}
    cells = ", ".join(f"{r['pattern']}: {r['stats']['total']['cells']:,} cells" for r in rows if r["stats"])
    return (f"{len(rows)} design(s) for {run.array.name} serving {', '.join(designs.values())}"
            + (f"; {cells}" if cells else " (yosys skipped)"))


def _simulate(run: _Run) -> str:
    from .sim import run_model

    task, qmodel = run.objects["task"], run.objects["qmodel"]
    x, y = task.test.inputs[0], task.test.targets.numpy()
    n = len(y) if run.options.images is None else min(run.options.images, len(y))
    x, y = x[:n], y[:n]
    run.events.start("simulate", len(qmodel.layers))
    try:
        # every conv/linear layer on Verilator, fed the previous simulated layer's requantized
        # outputs; each layer (in passes when it does not fit the memories) checked bit- and cycle-exact
        result = run_model(qmodel, qmodel.quantize_input(x), run.array, verify=False,
                           on_layer=lambda _: run.events.advance())
    except VerificationError as exc:
        raise _Failed(f"simulated RTL disagrees with the integer reference or the cost model: {exc}") from None
    rows = [{"layer": r.name, "pattern": str(qmodel.layer(r.name).pattern or "dense"), "M": r.M, "K": r.K,
             "N": r.N, "cycles": r.cycles, "predicted_cycles": r.predicted_cycles,
             "cycle_exact": r.cycles == r.predicted_cycles, "bit_exact": True, "passes": r.passes}
            for r in result.layers]
    rtl_acc = float((result.logits.argmax(axis=1) == y).mean())
    ref_acc = float((result.reference_logits.argmax(axis=1) == y).mean())
    run.summary["accuracy"]["rtl"] = rtl_acc
    run.summary["accuracy"]["int8_on_simulated_images"] = ref_acc
    run.summary["simulation"] = {
        "mode": f"the int8 model on Verilator over {n} test images: every conv/linear layer on the "
                "simulated array, fed the previous simulated layer's outputs requantized on the host "
                "(hwprune.sim.run_model); the accuracy comes from the simulated logits",
        "images": n, "layers": rows, "logits_bit_exact": result.bit_exact,
        "all_bit_exact": result.bit_exact, "all_cycle_exact": all(r["cycle_exact"] for r in rows)}
    if not (result.bit_exact and all(r["cycle_exact"] for r in rows)):
        bad = [r["layer"] for r in rows if not r["cycle_exact"]] or ["the logits"]
        raise _Failed(f"simulated RTL disagrees with the integer reference or the cost model on {', '.join(bad)}")
    return (f"{len(rows)} layers × {n} images chained on Verilator, bit-exact and cycle-exact; "
            f"RTL accuracy {rtl_acc:.2%} == integer reference {ref_acc:.2%}")


def _yn(flag: bool) -> str:
    return "yes" if flag else "NO"


#: the pipeline, in order: (name, stage function)
STAGES: tuple[tuple[str, Callable[[_Run], str]], ...] = (
    ("train", _train), ("estimate", _estimate), ("search", _search), ("prune", _prune),
    ("int8", _quantize), ("export", _export), ("rtl", _rtl), ("simulate", _simulate),
)


# -- the run -----------------------------------------------------------------------------------

def _prepare_out(out: Path, force: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; pass --force (force=True) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
    return work


def _file_list(work: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        data = path.read_bytes()
        rows.append({"path": path.relative_to(work).as_posix(), "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()})
    return rows


def _cpu() -> float:
    """CPU seconds of this process and its finished children (Verilator, yosys): the stage's
    work, apart from what other processes on a shared machine take."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_demo(options: DemoOptions, events: DemoEvents | None = None) -> dict[str, Any]:
    """Run the whole flow; write ``options.out/summary.json`` and ``report.html``; return the summary.

    Raises
    ------
    ConfigError
        Bad options, or no plan fits the budget.
    ExportError
        ``out`` exists and is not empty (without ``force``).
    """
    from . import __version__
    from .report import SUMMARY_FILE, SUMMARY_SCHEMA, write_report

    events = events or DemoEvents()
    array = load_array(options.array)
    out = Path(options.out)
    work = _prepare_out(out, options.force)
    run = _Run(options, array, work, events)
    run.summary.update(schema=SUMMARY_SCHEMA, version=__version__, model=TASK,
                       created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                       options={"array": options.array, "budget": options.budget, "seed": options.seed,
                                "epochs": options.epochs, "finetune_epochs": options.finetune_epochs,
                                "images": options.images, "criterion": options.criterion,
                                "stats": options.stats},
                       array=array.to_dict(), stages=[])
    try:
        for name, stage in STAGES:
            t0, c0 = time.perf_counter(), _cpu()
            try:
                note, status = stage(run), "done"
            except _Failed as exc:
                note, status = str(exc), "failed"
            record = StageRecord(name, status, time.perf_counter() - t0, note, _cpu() - c0)
            run.summary["stages"].append(record.to_dict())
            events.finish(record)
        run.summary["total_seconds"] = round(sum(s["seconds"] for s in run.summary["stages"]), 3)
        run.summary["total_cpu_seconds"] = round(sum(s["cpu_seconds"] for s in run.summary["stages"]), 3)
        run.summary["files"] = _file_list(work)
        write_text(work / SUMMARY_FILE, json.dumps(run.summary, indent=2) + "\n")
        write_report(work, summary=run.summary)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return run.summary

