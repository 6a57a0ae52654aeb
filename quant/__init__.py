"""clova_edge.quant: weight quantization of exported models (INT8 / INT4) with a quality report.

quantize_model_folder(folder, bits, ...) is the entry point the exporter and `clova-edge quantize` call.
"""

from .apply import quantize_model_folder

__all__ = ["quantize_model_folder"]
