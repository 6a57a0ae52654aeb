"""clova_edge.runtime: the part that runs on the device. Needs onnxruntime, numpy, jinja2 and regex only.

Never imports export/, quant/ or benchmarks/, nor torch, transformers or tokenizers.
"""
