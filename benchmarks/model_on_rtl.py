"""The whole digits test set through the simulated RTL for the dense, 2:4 and 1:4 CNN.

For each model (trained and pruned here, seeded), quantized with ``hwprune.quant``: every
conv/linear layer runs on the Verilator array (batch folded into M; layers too large for the
SRAMs run in row chunks), host steps as the integer reference.  Prints JSON per model: accuracy
on the RTL and of the integer reference (equal when the logits are bit-exact), simulated and
predicted cycles, wall seconds (Verilator builds included the first time).

    python benchmarks/model_on_rtl.py [--images N] [--array os8x8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hwprune.prune import prune_model
from hwprune.quant import quantize
from hwprune.sim.model import run_model
from hwprune.tasks import load_task
from hwprune.train import clone_model, train_task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="test images (default: all)")
    ap.add_argument("--array", default="os8x8")
    args = ap.parse_args(argv)
    task = load_task("digits_cnn")
    dense, _ = train_task(task, seed=0)
    models = {"dense": dense}
    for pat in ("2:4", "1:4"):
        models[pat] = prune_model(clone_model(dense), task, pattern=pat).model
    n = len(task.test) if args.images is None else min(args.images, len(task.test))
    targets = task.test.targets[:n].numpy()
    out = {"array": args.array, "images": n, "models": {}}
    for name, model in models.items():
        q = quantize(model, task, array=args.array)
        x = q.quantize_input(task.test.inputs[0][:n])
        t0 = time.perf_counter()
        res = run_model(q, x, args.array, verify=False)
        out["models"][name] = {
            "accuracy_rtl": float((res.outputs.argmax(axis=1) == targets).mean()),
            "accuracy_reference": float((res.reference.argmax(axis=1) == targets).mean()),
            "bit_exact": res.bit_exact, "cycles": res.cycles, "predicted_cycles": res.predicted_cycles,
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "layers": [layer.to_dict() for layer in res.layers]}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
