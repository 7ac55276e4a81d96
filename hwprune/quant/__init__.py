"""int8 quantization and the integer reference of a pruned model.

``quantize(model, data) -> QuantModel`` (a chain of conv/linear layers) or ``QuantTransformer``
(an encoder classifier: attention products and I-BERT integer host steps included);
``.run(x_int8)`` is the integer reference (every GEMM's int8 operands and int32 array outputs
included); ``evaluate_int`` its accuracy;
``qat_quantize`` adds straight-through fine-tuning when post-training int8 loses accuracy.
"""

from .calibrate import CALIBRATORS, Calibration, calibration_inputs, register_calibrator
from .fixedpoint import (
                    multiply_by_quantized_multiplier,
                    quantize_multiplier,
                    requantize,
)
from .graph import Flatten, Gemm, MaxPool, Relu, float_steps, run_float
from .ibert import i_gelu, i_layernorm, i_softmax, isqrt
from .model import (
                    GemmRunner,
                    IntegerModel,
                    IntegerRun,
                    LayerRun,
                    QuantLayer,
                    QuantModel,
                    detect_pattern,
                    evaluate_int,
                    quantize,
                    quantize_steps,
                    quantize_weights,
                    reference_gemm,
)
from .transformer import QuantEncoderLayer, QuantTransformer, quantize_transformer
from .qat import FakeQuantChain, qat_quantize

__all__ = ["CALIBRATORS", "Calibration", "FakeQuantChain", "Flatten", "Gemm", "GemmRunner", "IntegerModel",
           "IntegerRun", "LayerRun", "MaxPool", "QuantEncoderLayer", "QuantLayer", "QuantModel",
           "QuantTransformer", "Relu", "calibration_inputs", "detect_pattern", "evaluate_int", "float_steps",
           "i_gelu", "i_layernorm", "i_softmax", "isqrt", "multiply_by_quantized_multiplier", "qat_quantize",
           "quantize", "quantize_multiplier", "quantize_steps", "quantize_transformer", "quantize_weights",
           "reference_gemm", "register_calibrator", "requantize", "run_float"]
