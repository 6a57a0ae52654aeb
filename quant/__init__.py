"""clova_edge.quant: weight quantization of exported models (INT8 / INT4) with a quality report.

quantize_model_folder(folder, QuantSettings | bits, ...) is the entry point the exporter and
`clova-edge quantize` call; a QuantSettings holds a named Recipe (quant/recipe.py). Modules, bottom up:
primitives (numpy codes), gptq, plan (what a graph holds), recipe (what each tensor becomes), calibrate
(statistics on the calibration text), rotate (an exact rotation that spreads outliers), rewrite (the graph),
kvcache (int8 cache), prefill_attention (prompt chunks attend in float over it), report (held-out
evaluation), apply (the folder).
"""

from .apply import quantize_model_folder
from .recipe import DEFAULT_RECIPE, RECIPES, QuantSettings, Recipe, TensorRule

__all__ = ["quantize_model_folder", "QuantSettings", "Recipe", "TensorRule", "RECIPES", "DEFAULT_RECIPE"]
