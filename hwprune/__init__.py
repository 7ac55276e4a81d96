"""hwprune: hardware/software co-design of pruned networks for N:M sparse systolic arrays."""

from .config import ArrayConfig, EnergyTable, load_array, preset_names
from .cost import LayerCost, ModelCost, Traffic, estimate_layer, estimate_model
from .errors import ConfigError, ExportError, HwPruneError, UnsupportedLayerError, VerificationError
from .ir import ConvGeometry, LayerKind, LayerSpec, im2col
from .patterns import NM, Block, Channel, Dense, SparsityPattern, Unstructured, parse_pattern
from .schedule import Fold, Schedule, make_schedule

__version__ = "0.1.0"

__all__ = [
    "ArrayConfig", "EnergyTable", "load_array", "preset_names",
    "LayerCost", "ModelCost", "Traffic", "estimate_layer", "estimate_model",
    "ConfigError", "ExportError", "HwPruneError", "UnsupportedLayerError", "VerificationError",
    "ConvGeometry", "LayerKind", "LayerSpec", "im2col",
    "NM", "Block", "Channel", "Dense", "SparsityPattern", "Unstructured", "parse_pattern",
    "Fold", "Schedule", "make_schedule",
]
