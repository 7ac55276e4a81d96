"""How fast is the cost model?  Prints JSON: ResNet-50 (all layers, dense and 2:4) after import,
then (layer, config) evaluations per second over many array configs: the vectorised path
(:func:`hwprune.sweep.cost_batch`, pattern-level), the scalar ``estimate_model`` per config, and
exact-mask costing (scalar, a real 2:4 mask per layer).

Run by hand: ``python benchmarks/cost_speed.py``.  Targets: under 50 ms for ResNet-50;
≥ 1,000,000 (layer, config) evaluations per second on one core for the vectorised path.
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
    out["many_configs"] = many_configs(specs, array)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))


def sweep_configs(base, count: int) -> list:
    """``count`` distinct arrays: shapes × N-sets × overlap × SRAM sizes × dataflows."""
    import itertools
    shapes = [(r, c) for r in (4, 8, 16, 32, 64) for c in (4, 8, 16, 32, 64)]
    grid = itertools.product(shapes, ((1, 2, 4), (2, 4), (4,)), (False, True), (32, 64, 128, 256, 512),
                             (32, 64, 128, 256, 512), (64, 128), ("os", "ws", "is"))
    out = []
    for (r, c), ns, ov, w, a, o, df in grid:
        if df != "os" and (ns != (4,) or ov):
            continue
        out.append(base.replace(rows=r, cols=c, slot_options=ns, fold_overlap=ov, weight_sram_kib=w,
                                act_sram_kib=a, out_sram_kib=o, dataflow=df))
        if len(out) == count:
            break
    return out


def many_configs(specs, base) -> dict[str, object]:
    import numpy as np

    from hwprune.sweep import ConfigBatch, cost_batch

    t0 = time.perf_counter()
    cfgs = sweep_configs(base, 20000)
    batch = ConfigBatch.of(cfgs)
    build_s = time.perf_counter() - t0
    res: dict[str, object] = {"configs": len(cfgs), "layers": len(specs), "config_batch_seconds": round(build_s, 3)}
    for text in ("dense", "2:4", "unstructured:0.25"):
        pattern = parse_pattern(text)
        c0 = time.process_time()
        s = timed(lambda p=pattern: cost_batch(specs, batch, p), repeats=3)
        cpu = (time.process_time() - c0) / 3   # CPU seconds of this process: one core, whatever the load
        res[f"vectorised_{text}"] = {"seconds": round(s, 4), "cpu_seconds": round(cpu, 4),
                                     "evals_per_second": round(len(specs) * len(cfgs) / s),
                                     "evals_per_cpu_second": round(len(specs) * len(cfgs) / cpu)}
    few = [c for c in cfgs if 2 in c.slot_options][:: 200][:40]
    s = timed(lambda: [estimate_model(specs, c, parse_pattern("2:4")) for c in few], repeats=3)
    res["scalar_2:4"] = {"configs": len(few), "seconds": round(s, 4), "evals_per_second": round(len(specs) * len(few) / s)}
    rng = np.random.default_rng(0)
    nm = parse_pattern("2:4")
    masks = {sp.name: nm.mask(rng.random((sp.N, sp.K))) for sp in specs if sp.has_weights}
    s = timed(lambda: [estimate_model(specs, c, nm, masks=masks) for c in few[:10]], repeats=3)
    res["exact_mask_2:4"] = {"configs": 10, "seconds": round(s, 4), "evals_per_second": round(len(specs) * 10 / s)}
    res["target_evals_per_second"] = 1_000_000
    res["meets_target_per_cpu_second"] = min(v["evals_per_cpu_second"] for k, v in res.items()
                                             if k.startswith("vectorised")) >= 1_000_000
    return res


if __name__ == "__main__":
    main()
