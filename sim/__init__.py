"""Cycle-accurate simulation of the generated array (imported as ``hwprune.sim``).

Two back ends run the same Verilog-equivalent design: Verilator (compiled once per design,
cached, a C++ testbench with no Python in the loop) and the Amaranth simulator (small arrays,
VCD traces).  On both the testbench is a DMA engine (:mod:`hwprune.sim.dma`): a layer of any
size runs in the schedule's passes, loaded through the host port, computed and stored,
single- or double-buffered, and the ticks it takes equal the cost model's total.
"""

from hwprune.sim.core import BACKENDS, SimResult, layer_operands, quantize_int8, simulate
from hwprune.sim.model import LayerOnRtl, ModelRun, run_model

__all__ = ["simulate", "SimResult", "BACKENDS", "layer_operands", "quantize_int8", "run_model", "ModelRun",
           "LayerOnRtl"]
