"""Design-space sweep: which array for which pruned model (issue 14).

* :mod:`.vector` — the cost model over many array configs at once (numpy), equal to the scalar one;
* :mod:`.space` — the space file: value sets of array parameters × models × patterns;
* :mod:`.area` — yosys cells, LUT/FF/DSP and fmax of the generated RTL, cached by config hash;
* :mod:`.run` — evaluation as Ray tasks or in-process, streamed into a resumable Parquet table;
* :mod:`.pareto` — fronts, plots and one-line recommendations.
"""

from .vector import BatchCost, ConfigBatch, cost_batch

__all__ = ["BatchCost", "ConfigBatch", "cost_batch"]
