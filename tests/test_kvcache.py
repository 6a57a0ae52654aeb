"""INT8 KV cache: calibrated per-channel scales, GroupQueryAttention reads/writes int8, the runtime runs
it."""

import shutil

import numpy as np
import onnx

from clova_edge import Engine, GenerationSettings
from clova_edge.quant import quantize_model_folder


def test_int8_kv_cache_variant_runs_and_stays_close(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    entry = quantize_model_folder(folder, 8, eval_tokens=300, kv_cache="int8")
    assert entry["kv_dtype"] == "int8" and entry["quantization"]["kv_cache"] == "int8"
    assert entry["memory_estimate"]["kv_cache_bytes"] * 4 == (2 * 2 * 2 * 64 * 4 * 4096)
    graph = onnx.load(str(folder / entry["file"]), load_external_data=False).graph
    # decode runs the int8 kernel in each If's else branch (prompt chunks: tests/test_prefill_attention.py)
    gqa = [b.g.node[0] for n in graph.node if n.op_type == "If"
           for b in n.attribute if b.name == "else_branch"]
    assert len(gqa) == 2 and all(n.op_type == "GroupQueryAttention" for n in gqa)
    assert gqa and all({a.name for a in n.attribute} >= {"k_quant_type", "v_quant_type", "kv_cache_bit_width"}
                       for n in gqa)
    past = [i for i in graph.input if i.name.startswith("past")]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT8 for i in past)

    fp32, q = Engine.load(folder, variant="fp32"), Engine.load(folder, variant="int8")
    assert q.model.kv_dtype == np.int8
    ids = np.array(fp32.encode("int8 KV cache, 안녕하세요 " * 8), np.int64)
    ref_cache, q_cache = fp32.model.new_cache(len(ids) + 8), q.model.new_cache(len(ids) + 8)
    ref, got = fp32.model.prefill(ref_cache, ids), q.model.prefill(q_cache, ids)
    for t in ids[:8]:    # decode steps read the int8 cache the prefill wrote
        ref, got = fp32.model.decode(ref_cache, int(t)).copy(), q.model.decode(q_cache, int(t)).copy()
    cos = float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.99, cos
    assert q.generate("hello", GenerationSettings(max_new_tokens=8))  # the whole loop runs on int8 buffers
