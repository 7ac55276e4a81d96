"""Whole test sets through the simulated RTL: the digits CNN (dense, 2:4, 1:4) and the
Transformer task's model (dense, 2:4).

For each model (trained and pruned here, seeded), quantized with ``hwprune.quant``: every GEMM
runs on the Verilator array — conv/linear layers with the batch folded into M, a Transformer's
attention products Q·Kᵀ and A·V dense with K / Vᵀ in the weight memory; layers or groups too
large for the SRAMs run in several runs of the same design — and the host steps are the integer
reference's own (requantization, pooling; I-BERT softmax and LayerNorm).  Prints JSON per
model: fp32 accuracy and the integer reference's on the whole test set, accuracy on the RTL
(equal to the reference's when the logits are bit-exact), simulated and predicted cycles, wall
seconds (Verilator builds included the first time).

    python benchmarks/model_on_rtl.py [--task digits_cnn|tiny_transformer ...] [--images N]
                                      [--array os8x8] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time

from hwprune.io import print_json
from hwprune.prune import prune_model
from hwprune.quant import evaluate_int, quantize
from hwprune.sim.model import run_model
from hwprune.tasks import load_task
from hwprune.train import clone_model, evaluate, train_task

#: the patterns each task's model is run with
PATTERNS = {"digits_cnn": ("2:4", "1:4"), "tiny_transformer": ("2:4",)}


def _task(name: str, images: int | None, array: str) -> dict[str, object]:
    task = load_task(name)
    dense, _ = train_task(task, seed=0)
    models = {"dense": (dense, {})}
    for pat in PATTERNS[name]:
        res = prune_model(clone_model(dense), task, pattern=pat)
        models[pat] = (res.model, dict(res.patterns))
    n = len(task.test) if images is None else min(images, len(task.test))
    targets = task.test.targets[:n].numpy()
    out: dict[str, object] = {"examples": n, "models": {}}
    for label, (model, patterns) in models.items():
        q = quantize(model, task, array=array, patterns=patterns)
        x = q.quantize_input(task.test.inputs[0][:n])
        t0 = time.perf_counter()
        res = run_model(q, x, array, verify=False)
        out["models"][label] = {
            "accuracy_fp32_test_set": evaluate(model, task), "accuracy_int8_test_set": evaluate_int(q, task),
            "accuracy_rtl": float((res.logits.argmax(axis=1) == targets).mean()),
            "accuracy_reference": float((res.reference_logits.argmax(axis=1) == targets).mean()),
            "bit_exact": res.bit_exact, "cycles": res.cycles, "predicted_cycles": res.predicted_cycles,
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "layers": [layer.to_dict() for layer in res.layers]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", nargs="+", choices=sorted(PATTERNS), default=sorted(PATTERNS))
    ap.add_argument("--images", type=int, default=None, help="test examples per task (default: all)")
    ap.add_argument("--array", default="os8x8")
    ap.add_argument("--out", default=None, help="also write the JSON here (atomically)")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args(argv)
    report = {"array": args.array, "tasks": {name: _task(name, args.images, args.array) for name in args.task}}
    print_json(report, args.out, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
