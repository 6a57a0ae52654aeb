"""Greedy decoding with a bare onnxruntime session, dumped on one machine and compared across two.

Used by arm/test-arm.sh to show that the arm64 (qemu) answer equals the x86 answer on the same exported model:

  python arm/greedy_check.py dump MODEL_DIR OUT.npz [--variant int4] [--file GRAPH.onnx] [--steps 16]
                                [--ids 1,2]
  python arm/greedy_check.py compare X86.npz ARM.npz [--rtol 1e-5] [--report]
  python arm/greedy_check.py noise REF.npz X86.npz ARM.npz [--factor 2]

`dump` follows runtime/manifest.py's graph contract (one graph for prefill and decode, in-place KV buffers
bound with IOBinding) and needs only numpy, onnxruntime and clova_edge.runtime; --file runs another graph of
the folder (e.g. the INT4 graph with MatMulNBits accuracy_level 0). One thread, so both sides reduce in the
same order.
`compare` exits 1 unless the token ids are identical and the first-step logits agree within rtol x max|logit|.
`noise` compares two runs' first-step logits with a reference (the same INT4 weights computed in fp32): it
exits 1 unless ARM's rms deviation is at most `factor` x x86's (+1e-4) - both computing with int8 activations
(accuracy_level 4) deviate from the reference, each with its own rounding.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clova_edge.runtime.manifest import (INPUT_IDS, LOGITS, LOGITS_INDEX, SEQLENS_K, TOTAL_SEQ_LEN,
                                         load_manifest,
                                         past_names, present_names)

DEFAULT_IDS = (1, 17, 42, 99, 123, 7, 256, 300)


@dataclass(frozen=True)
class GreedyRun:
    ids: np.ndarray          # int64 [steps]: the greedy tokens
    logits: np.ndarray       # float32 [steps, vocab]: the logits each token was picked from


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def greedy(model_dir: Path, variant: str | None, prompt_ids: list[int], steps: int,
           graph_file: str | None = None) -> GreedyRun:
    """Prefill prompt_ids in one call, then decode `steps - 1` tokens one per call, always taking the
    argmax."""
    manifest = load_manifest(model_dir)
    cfg = manifest.config
    session = _session(model_dir / (graph_file or manifest.variant(variant).file))
    capacity = len(prompt_ids) + steps
    shape = (1, cfg.num_key_value_heads, capacity, cfg.head_dim)
    # the cache's element type is the graph's (INT4 exports keep an int8 cache), read from the session itself
    past_type = {i.name: i.type for i in session.get_inputs()}[past_names(cfg.num_hidden_layers)[0][0]]
    kv_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(int8)": np.int8}[past_type]
    caches = [(ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, kv_dtype)),
               ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, kv_dtype)))
              for _ in range(cfg.num_hidden_layers)]
    ids, rows, new, length = [], [], list(prompt_ids), 0
    for _ in range(steps):
        length += len(new)
        io = session.io_binding()
        io.bind_cpu_input(INPUT_IDS, np.array([new], np.int64))
        io.bind_cpu_input(SEQLENS_K, np.array([length - 1], np.int32))
        io.bind_cpu_input(TOTAL_SEQ_LEN, np.array(length, np.int32))
        io.bind_cpu_input(LOGITS_INDEX, np.array([len(new) - 1], np.int64))
        for (k, v), (pk, pv), (qk, qv) in zip(caches, past_names(cfg.num_hidden_layers),
                                               present_names(cfg.num_hidden_layers)):
            io.bind_ortvalue_input(pk, k)
            io.bind_ortvalue_input(pv, v)
            io.bind_ortvalue_output(qk, k)
            io.bind_ortvalue_output(qv, v)
        io.bind_output(LOGITS)
        session.run_with_iobinding(io)
        logits = io.get_outputs()[-1].numpy()[0, -1]   # outputs come back in binding order: logits is last
        token = int(np.argmax(logits))
        ids.append(token)
        rows.append(logits.astype(np.float32))
        new = [token]
    return GreedyRun(ids=np.array(ids, np.int64), logits=np.stack(rows))


def dump(args: argparse.Namespace) -> int:
    prompt = [int(t) for t in args.ids.split(",")] if args.ids else list(DEFAULT_IDS)
    run = greedy(Path(args.model), args.variant, prompt, args.steps, args.file)
    np.savez(args.out, ids=run.ids, logits=run.logits, prompt=np.array(prompt, np.int64),
             machine=np.array(platform.machine()), ort=np.array(ort.__version__),
             numpy=np.array(np.__version__))
    return 0


def compare(args: argparse.Namespace) -> int:
    a, b = np.load(args.a), np.load(args.b)
    same_ids = a["ids"].shape == b["ids"].shape and bool(np.all(a["ids"] == b["ids"]))
    n = min(len(a["logits"]), len(b["logits"]))
    step_err = [float(np.max(np.abs(a["logits"][i] - b["logits"][i]))) for i in range(n)]
    bit_equal = sum(bool(np.array_equal(a["logits"][i], b["logits"][i])) for i in range(n))
    scale = max(1.0, float(np.max(np.abs(a["logits"][0]))))
    ok = same_ids and step_err[0] <= args.rtol * scale
    sys.stdout.write(
        f"  {a['machine']} (ort {a['ort']}) vs {b['machine']} (ort {b['ort']}), "
        f"{len(a['ids'])} greedy steps\n"
        f"    ids {a['machine']}: {a['ids'].tolist()}\n    ids {b['machine']}: {b['ids'].tolist()}\n"
        f"    tokens identical: {same_ids}; first-step logits max |diff| {step_err[0]:.3g} "
        f"(max |logit| {scale:.3g}, "
        f"tolerance {args.rtol:g} x that = {args.rtol * scale:.3g}); all steps {max(step_err):.3g}; "
        f"bit-identical steps {bit_equal}/{n}: {'(reported)' if args.report else 'PASS' if ok else 'FAIL'}\n")
    return 0 if ok or args.report else 1


def noise(args: argparse.Namespace) -> int:
    ref = np.load(args.ref)["logits"][0].astype(np.float64)
    rms = {}
    for side, path in (("x86", args.x86), ("arm64", args.arm)):
        d = np.load(path)["logits"][0] - ref
        rms[side] = float(np.sqrt(np.mean(d * d)))
        sys.stdout.write(f"    {side}: first-step logits vs the fp32-compute reference: rms {rms[side]:.3g}, "
                         f"max {float(np.max(np.abs(d))):.3g}\n")
    ok = rms["arm64"] <= args.factor * rms["x86"] + 1e-4
    sys.stdout.write(f"    arm64 deviation within {args.factor:g} x x86's: {'PASS' if ok else 'FAIL'}\n")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("model")
    d.add_argument("out")
    d.add_argument("--variant", default="int4")
    d.add_argument("--steps", type=int, default=16)
    d.add_argument("--ids", default="")
    d.add_argument("--file", default=None)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--rtol", type=float, default=1e-5)
    c.add_argument("--report", action="store_true", help="print the comparison, always exit 0")
    z = sub.add_parser("noise")
    z.add_argument("ref")
    z.add_argument("x86")
    z.add_argument("arm")
    z.add_argument("--factor", type=float, default=2.0)
    args = p.parse_args(argv)
    return {"dump": dump, "compare": compare, "noise": noise}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
