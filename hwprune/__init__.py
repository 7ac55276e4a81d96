"""hwprune: hardware/software co-design of pruned networks for N:M sparse systolic arrays."""

from .config import ArrayConfig, EnergyTable, load_array, preset_names
from .cost import LayerCost, ModelCost, Traffic, estimate_layer, estimate_model
from .errors import ConfigError, ExportError, HwPruneError, UnsupportedLayerError, VerificationError
from .ir import ConvGeometry, LayerKind, LayerSpec, im2col
from .patterns import NM, Block, Channel, Dense, SparsityPattern, Unstructured, parse_pattern
from .schedule import Fold, Schedule, make_schedule

__version__ = "0.1.0"

#: torch-based entry points, imported on first use so ``import hwprune`` stays numpy-only
_LAZY = {"Workload": "hwprune.workload", "WorkloadLike": "hwprune.workload",
         "prune_model": "hwprune.prune.engine", "GradualPruner": "hwprune.prune.gradual",
         "load_task": "hwprune.tasks"}


def __getattr__(name: str):  # PEP 562
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwprune' has no attribute {name!r}")

__all__ = [
    "ArrayConfig", "EnergyTable", "load_array", "preset_names",
    "LayerCost", "ModelCost", "Traffic", "estimate_layer", "estimate_model",
    "ConfigError", "ExportError", "HwPruneError", "UnsupportedLayerError", "VerificationError",
    "ConvGeometry", "LayerKind", "LayerSpec", "im2col",
    "NM", "Block", "Channel", "Dense", "SparsityPattern", "Unstructured", "parse_pattern",
    "Fold", "Schedule", "make_schedule",
    "Workload", "WorkloadLike", "prune_model", "GradualPruner", "load_task",
]
