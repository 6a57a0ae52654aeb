"""Study: should prompt chunks attend through onnxruntime's int8-cache GroupQueryAttention, or in float?

    python -m clova_edge.benchmarks.studies.prompt_attention [--threads 2]

One attention layer of the full-size HyperCLOVAX shape (16 query heads, 8 KV heads, head_dim 128) with an int8
per-channel cache bound in place, as the runtime binds it: the int8 kernel alone, and the same node after
quant/prefill_attention.py's rewrite (If: the float path for a chunk, the int8 kernel for one token). Times a
512-token chunk at past 0 and on top of 1,536 cached rows, and a decode step at 3,000, and checks that both
graphs give the same output and cache bytes. Chose: the rewrite in quant/apply.py for every int8-cache
variant.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from clova_edge.quant.prefill_attention import rewrite_prefill_attention

PAST_K, PAST_V = "past_key_values.0.key", "past_key_values.0.value"


def attention_graph(heads: int, kv_heads: int, head_dim: int, positions: int) -> onnx.ModelProto:
    """One int8-cache GroupQueryAttention fed packed QKV directly, with the export's input names."""
    rng = np.random.default_rng(0)
    angles = np.arange(positions)[:, None] / 10000 ** (np.arange(0, head_dim, 2) / head_dim)[None]
    kv = kv_heads * head_dim
    inits = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
             numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin"),
             numpy_helper.from_array((rng.random(kv) * 0.02 + 0.005).astype(np.float32), "ks"),
             numpy_helper.from_array((rng.random(kv) * 0.02 + 0.005).astype(np.float32), "vs")]
    inputs = ["qkv", "", "", PAST_K, PAST_V, "seqlens_k", "total_sequence_length", "cos", "sin", "", "", "",
              "ks", "vs"]
    gqa = helper.make_node("GroupQueryAttention", inputs, ["out", "present.0.key", "present.0.value"],
                           domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, do_rotary=1,
                           scale=head_dim ** -0.5, k_quant_type="PER_CHANNEL", v_quant_type="PER_CHANNEL",
                           kv_cache_bit_width=8)
    cache = [1, kv_heads, "capacity", head_dim]
    graph = helper.make_graph([gqa], "attention", [
        helper.make_tensor_value_info("input_ids", TP.INT64, [1, "S"]),
        helper.make_tensor_value_info("qkv", TP.FLOAT, [1, "S", heads * head_dim + 2 * kv]),
        helper.make_tensor_value_info(PAST_K, TP.INT8, cache),
        helper.make_tensor_value_info(PAST_V, TP.INT8, cache),
        helper.make_tensor_value_info("seqlens_k", TP.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TP.INT32, [])], [
        helper.make_tensor_value_info("out", TP.FLOAT, None),
        helper.make_tensor_value_info("present.0.key", TP.INT8, None),
        helper.make_tensor_value_info("present.0.value", TP.INT8, None)], inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def rewritten(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    assert rewrite_prefill_attention(out) == 1
    return out


class Layer:
    """A session over an attention graph with its int8 cache bound in place (one buffer in and out)."""

    def __init__(self, model: onnx.ModelProto, capacity: int, threads: int = 1):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        shape = [d.dim_value or capacity for d in model.graph.input[2].type.tensor_type.shape.dim]
        self.k, self.v = (np.zeros(shape, np.int8) for _ in range(2))
        self.length = 0

    def run(self, qkv: np.ndarray, repeats: int = 1) -> tuple[np.ndarray, float]:
        """Run `qkv` at the current length `repeats` times (the same rows rewritten): (output, best s)."""
        s = qkv.shape[1]
        io, total = self.session.io_binding(), self.length + s
        io.bind_cpu_input("input_ids", np.zeros((1, s), np.int64))
        io.bind_cpu_input("qkv", qkv)
        io.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        io.bind_output("out")        # bound first: get_outputs() lists outputs in binding order
        for name, a in ((PAST_K, self.k), (PAST_V, self.v)):
            value = ort.OrtValue.ortvalue_from_numpy(a)
            io.bind_ortvalue_input(name, value)
            io.bind_ortvalue_output(name.replace("past_key_values", "present"), value)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            self.session.run_with_iobinding(io)
            best = min(best, time.perf_counter() - t)
        self.length = total
        return io.get_outputs()[0].numpy(), best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    heads, kv_heads, d, capacity = 16, 8, 128, 4096
    base = attention_graph(heads, kv_heads, d, capacity)
    layers = {"int8 kernel": Layer(base, capacity, a.threads),
              "rewritten": Layer(rewritten(base), capacity, a.threads)}
    rng = np.random.default_rng(1)
    width = (heads + 2 * kv_heads) * d
    print("case                      int8 kernel ms  rewritten ms   max |out diff|  cache bytes differing")
    for label, s, past, repeats in (("512 new, past 0", 512, 0, 5), ("512 new, past 1536", 512, 1536, 5),
                                    ("1 new (decode), past 3000", 1, 3000, 200)):
        qkv = rng.standard_normal((1, s, width)).astype(np.float32)
        outs, times = [], []
        for layer in layers.values():
            layer.length = past
            out, t = layer.run(qkv, repeats)
            outs.append(out)
            times.append(t)
        ref, new = layers.values()
        diff = int((ref.k != new.k).sum() + (ref.v != new.v).sum())
        print(f"{label:26s} {1e3 * times[0]:14.2f} {1e3 * times[1]:13.2f} "
              f"{np.abs(outs[0] - outs[1]).max():16.2e}  {diff}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
