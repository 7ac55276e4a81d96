"""How fast is the cost model?  Prints JSON: ResNet-50 (all layers, dense and 2:4) after import.

Run by hand: ``python benchmarks/cost_speed.py``.  Target: under 50 ms for ResNet-50.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

from hwprune import Dense, estimate_model, load_array, parse_pattern
from hwprune.zoo import layers


def timed(fn, repeats: int = 20) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    t0 = time.perf_counter()
    specs = layers("resnet50")
    import_s = time.perf_counter() - t0
    array = load_array("os16x16")
    out: dict[str, object] = {"model": "resnet50", "array": array.name, "layers": len(specs),
                              "import_seconds": round(import_s, 3)}
    for text in ("dense", "2:4", "1:4", "block:16x4:0.25", "unstructured:0.25"):
        pattern = Dense() if text == "dense" else parse_pattern(text)
        s = timed(lambda: estimate_model(specs, array, pattern))
        cost = estimate_model(specs, array, pattern)
        out[text] = {"seconds": round(s, 5), "layers_per_second": round(len(specs) / s),
                     "total_cycles": cost.cycles, "compute_cycles": int(cost.total("compute_cycles"))}
    both = timed(lambda: (estimate_model(specs, array, Dense()), estimate_model(specs, array, parse_pattern("2:4"))))
    out["dense_and_2:4_seconds"] = round(both, 5)
    out["target_seconds"] = 0.05
    out["meets_target"] = both < 0.05
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
