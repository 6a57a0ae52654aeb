"""Which INT8 route is faster on this CPU: MatMulNBits 8-bit or dynamic quantization (DynamicQuantizeMatMul)?

Builds the linear layers of HyperCLOVAX-SEED-0.5B (fused qkv 1024->4096, o 2048->1024, fused gate/up
1024->8192, down 4096->1024; `--layers` of them, residual adds in between) plus, separately, the tied vocabulary
projection (1024->110592 on the last position), quantizes them with clova_edge.quant.apply.rewrite_model, and
times decode (S=1) and prefill (S=512) at 2 threads. Attention is left out: it is the same in every variant.

    python -m clova_edge.benchmarks.studies.int8_routes [--layers 4] [--threads 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from clova_edge.quant.apply import rewrite_model

H, Q, F, V = 1024, 2048, 4096, 110592


def layers_model(n_layers: int, rng: np.random.Generator) -> onnx.ModelProto:
    nodes, inits, x = [], [], "x"
    w = lambda name, k, n: inits.append(numpy_helper.from_array(  # noqa: E731
        (rng.standard_normal((k, n)) * 0.02).astype(np.float32), name))
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
              {"z": [0], "q": [Q], "f": [F], "ax": [2]}.items()]
    for i in range(n_layers):
        w(f"qkv{i}", H, Q + 2 * 1024), w(f"o{i}", Q, H), w(f"gu{i}", H, 2 * F), w(f"d{i}", F, H)
        nodes += [helper.make_node("MatMul", [x, f"qkv{i}"], [f"a{i}"]),
                  helper.make_node("Slice", [f"a{i}", "z", "q", "ax"], [f"as{i}"]),
                  helper.make_node("MatMul", [f"as{i}", f"o{i}"], [f"ao{i}"]),
                  helper.make_node("Add", [x, f"ao{i}"], [f"h{i}"]),
                  helper.make_node("MatMul", [f"h{i}", f"gu{i}"], [f"g{i}"]),
                  helper.make_node("Slice", [f"g{i}", "z", "f", "ax"], [f"gs{i}"]),
                  helper.make_node("Relu", [f"gs{i}"], [f"gr{i}"]),
                  helper.make_node("MatMul", [f"gr{i}", f"d{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"h{i}", f"m{i}"], [f"y{i}"])]
        x = f"y{i}"
    g = helper.make_graph(nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", H])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, "S", H])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def lm_head_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Gather(E) (unused output kept tiny) + Gemm(transB=1, E): the exporter's tied pattern, so that the
    rewrite finds the table; timed at one position (the runtime asks logits for the last token only)."""
    e = (rng.standard_normal((V, H)) * 0.02).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["emb"], axis=0),
             helper.make_node("Gemm", ["x", "E"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "lm_head",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", H]),
                           helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["M", V]),
                           helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, H])],
                          [numpy_helper.from_array(e, "E")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def variants(model: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    return {
        "fp32": model,
        "nbits8_acc4": rewrite_model(model, 8, method="rtn", lm_head="int8", accuracy_level=4)[0],
        "nbits8_acc0": rewrite_model(model, 8, method="rtn", lm_head="int8", accuracy_level=0)[0],
        "dynamic_int8": rewrite_model(model, 8, method="rtn", lm_head="int8", int8_route="dynamic")[0],
        "nbits4_acc4": rewrite_model(model, 4, method="rtn", lm_head="int4", accuracy_level=4)[0],
    }


def time_it(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], reps: int) -> list[float]:
    sess.run(None, feeds)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feeds)
        out.append(time.perf_counter() - t)
    return out


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory(prefix="int8_routes-") as tmp:   # the system's temp folder, removed after
        path = os.path.join(tmp, "model.onnx")
        onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for part, model in (("layers", layers_model(args.layers, rng)), ("lm_head", lm_head_model(rng))):
        for name, m in variants(model).items():
            sess = session(m, args.threads)
            for phase, s in (("decode", 1), ("prefill", args.prefill)):
                if part == "lm_head":
                    feeds = {"x": rng.standard_normal((1, H)).astype(np.float32), "ids": np.array([1])}
                    if phase == "prefill":
                        continue
                else:
                    feeds = {"x": rng.standard_normal((1, s, H)).astype(np.float32)}
                ts = time_it(sess, feeds, 20 if s == 1 else 3)
                med = statistics.median(ts)
                row = {"part": part, "variant": name, "phase": phase, "tokens": s, "threads": args.threads,
                       "median_ms": round(1e3 * med, 3), "min_ms": round(1e3 * min(ts), 3),
                       "load1": round(os.getloadavg()[0], 2)}
                if part == "layers":
                    row["per_layer_ms"] = round(1e3 * med / args.layers, 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del sess
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
