"""int8 quantization and the integer reference of a pruned model.

``quantize(model, data) -> QuantModel``; ``QuantModel.run(x_int8)`` is the integer reference
(every layer's int8 operands and int32 array outputs included); ``evaluate_int`` its accuracy;
``qat_quantize`` adds straight-through fine-tuning when post-training int8 loses accuracy.
"""

from .calibrate import CALIBRATORS, Calibration, calibration_inputs, register_calibrator
from .fixedpoint import (
                    multiply_by_quantized_multiplier,
                    quantize_multiplier,
                    requantize,
)
from .graph import Flatten, Gemm, MaxPool, Relu, float_steps, run_float
from .model import (
                    IntegerRun,
                    LayerRun,
                    QuantLayer,
                    QuantModel,
                    detect_pattern,
                    evaluate_int,
                    quantize,
                    quantize_steps,
                    quantize_weights,
)
from .qat import FakeQuantChain, qat_quantize

__all__ = ["CALIBRATORS", "Calibration", "FakeQuantChain", "Flatten", "Gemm", "IntegerRun", "LayerRun",
           "MaxPool", "QuantLayer", "QuantModel", "Relu", "calibration_inputs", "detect_pattern",
           "evaluate_int", "float_steps", "multiply_by_quantized_multiplier", "qat_quantize", "quantize",
           "quantize_multiplier", "quantize_steps", "quantize_weights", "register_calibrator",
           "requantize", "run_float"]
