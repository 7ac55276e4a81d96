"""Export a pruned, quantized model: ONNX (float and QDQ) and verified memory images."""

from .bundle import (ALL_FORMATS, SCHEMA, SCHEMA_VERSION, ExportResult, FileRecord, LoadedExport, LoadedLayer,
                     decode_acts, decode_weights, export_images, export_model, largest_batch, load_export,
                     write_manifest)
from .onnx import (OPSET, export_float_onnx, export_qdq_onnx, read_sparsity_metadata, run_onnx,
                   sparsity_metadata)

__all__ = ["ALL_FORMATS", "OPSET", "SCHEMA", "SCHEMA_VERSION", "ExportResult", "FileRecord", "LoadedExport",
           "LoadedLayer", "decode_acts", "decode_weights", "export_float_onnx", "export_images", "export_model",
           "export_qdq_onnx", "largest_batch", "load_export", "read_sparsity_metadata", "run_onnx",
           "sparsity_metadata", "write_manifest"]
