"""Export a pruned, quantized model: ONNX (float and QDQ) and verified memory images."""

from .onnx import (OPSET, export_float_onnx, export_qdq_onnx, read_sparsity_metadata, run_onnx,
                   sparsity_metadata)

__all__ = ["OPSET", "export_float_onnx", "export_qdq_onnx", "read_sparsity_metadata", "run_onnx",
           "sparsity_metadata"]
