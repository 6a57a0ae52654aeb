"""`make bench`: clova-edge and its peers on the same weights, same machine, same run -> benchmarks/results/.

    python -m clova_edge.benchmarks.bench [--models full,smollm2] [--only SUBSTR,...] [--repetitions 3]
                                          [--smoke] [--serving on|off|only]

Steps: install the peers (envs.py), build the test models (export/testmodels.py: the full-size random
HyperCLOVAX-shaped model for speed, SmolLM2-135M-Instruct with real weights for perplexity), convert them
for every runtime (prepare.py), probe this machine's read bandwidth, then run each runtime in its own
process (peers/runner.py, protocol.py) one at a time, recording the load average with each result. Results
are rewritten after every run (a partial run keeps what it measured; --resume keeps rows already measured,
rerunning those --only names) and rendered by report.py. --smoke: the tiny model, PyTorch and clova-edge only,
one repetition, short prompts (seconds). Then the serving section (servers.py, serving.py: llama-server and
clova-edge serve on the full-size model at 1, 2, 4 concurrent streams, when --models has full); --serving only
runs it alone
(minutes; the rest of OUT/bench.json is kept), --serving off skips it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from clova_edge.runtime.manifest import KV_DTYPE_BYTES

from . import constrained, envs, first_turn, prepare, report, servers
from .prepare import selected
from .bandwidth import read_bandwidth
from .protocol import Spec

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "bench"
RESULTS = ROOT / "benchmarks" / "results"
SCALING = ("llama.cpp Q4_0", "onnxruntime-genai int4", "clova-edge int4")   # rows also run at 1 thread


@dataclass(frozen=True)
class Row:
    """One runtime + model format to measure."""

    label: str
    peer: str                 # module in peers/
    path: Path                # what the adapter loads
    python: Path              # interpreter of the peer's environment
    weight_bytes: int         # bytes a decode step reads from weights
    kv_elem_bytes: int        # bytes per KV-cache element (f16 in llama.cpp, fp32 elsewhere)
    disk: int
    variant: str | None = None
    env: dict | None = None


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    import os
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            "kernel": platform.release()}


EVAL_MODELS = ("smollm2", "smollm2-perm")    # real weights: quality rows (the full-size model is random)
EXTRA_RECIPES = ("int4-fast",)              # clova-edge INT4 recipes benchmarked beside the default one
AGREEMENT_PENALTY = 1.2                     # the HyperCLOVAX manifest's repetition penalty (its model card's)


def quality_inputs(hf: Path, smoke: bool = False) -> dict[str, Any]:
    """Spec fields of a quality run: the held-out texts (quant/report.py's) and the answer-agreement prompts
    (quant/data/agreement_prompts.json), chat-templated, all tokenized by the model's own Hugging Face
    tokenizer."""
    from transformers import AutoTokenizer

    from clova_edge.quant.report import TOKENS_PER_TEXT, evaluation_texts

    tok = AutoTokenizer.from_pretrained(hf)
    texts = {k: tok(v, add_special_tokens=False).input_ids[:96 if smoke else TOKENS_PER_TEXT]
             for k, v in evaluation_texts().items()}
    prompts = json.loads((ROOT / "quant" / "data" / "agreement_prompts.json").read_text(encoding="utf-8"))
    ids = [list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"])
           for p in prompts[:3 if smoke else None]]
    stops = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int)}
    return {"eval_texts": texts, "agreement_prompts": tuple(ids), "stop_ids": tuple(sorted(stops)),
            "agreement_tokens": 4 if smoke else 32, "repetition_penalty": AGREEMENT_PENALTY}


def rows_for(name: str, hf: Path, peers: set[str], say: Callable[[str], None],
             clova_folder: Path | None = None, extra_recipes: tuple[str, ...] = EXTRA_RECIPES,
             only: list[str] | None = None) -> list[Row]:
    """Install/convert what `peers` need for model `name` and list its rows (a failing peer is reported,
    skipped).
    clova_folder: an already exported clova-edge folder to use instead of exporting hf."""
    work, logs, main = WORK / name, WORK / "logs" / name, Path(sys.executable)
    rows: list[Row] = []

    def attempt(what: str, fn: Callable[[], list[Row]]) -> None:
        try:
            t0 = time.perf_counter()
            rows.extend(fn())
            say(f"[{name}] {what} ready ({time.perf_counter() - t0:.0f} s)")
        except Exception as e:  # a peer that cannot be installed is reported, the others still run
            say(f"[{name}] {what} skipped: {type(e).__name__}: {e}")

    if "torch_fp32" in peers:
        attempt("PyTorch", lambda: [Row("PyTorch fp32", "torch_fp32", hf, main,
                                        prepare.hf_weight_bytes_fp32(hf), 4, prepare.disk_bytes(hf))])
    if "clova" in peers:
        def clova() -> list[Row]:
            wanted = tuple(b for b in (8, 4) if selected(f"clova-edge int{b}", only))
            folder = clova_folder or prepare.clova_model(hf, work / "clova", logs, say, wanted)
            extra = [r for r in extra_recipes if selected(f"clova-edge {r}", only)]
            folders = [(folder, "")] + [(prepare.extra_recipe_folder(folder, r, say), r) for r in extra]
            out = []
            for d, recipe in folders:
                manifest = json.loads((d / "manifest.json").read_text())
                for v, info in manifest["variants"].items():
                    f = d / info["file"]
                    kv_bytes = KV_DTYPE_BYTES[info.get("kv_dtype", "float32")]
                    label = f"clova-edge {recipe or v}"
                    out.append(Row(label, "clova", d, main, prepare.onnx_weight_bytes(f), kv_bytes,
                                   sum(prepare.disk_bytes(d / x)
                                       for x in [info["file"], *info.get("data_files", [])]),
                                   variant=v))
            return out if name in EVAL_MODELS else out + constrained.rows(out)   # + the json-schema row
        attempt("clova-edge", clova)
    if "ortgenai" in peers:
        def ortgenai() -> list[Row]:
            py = envs.install_ortgenai()
            out = []
            for p in ("int4", "int8"):
                d = prepare.ortgenai_model(hf, work / f"ortgenai-{p}", py, p, logs)
                out.append(Row(f"onnxruntime-genai {p}", "ortgenai", d, py,
                               prepare.onnx_weight_bytes(d / "model.onnx"), 4, prepare.disk_bytes(d)))
            return out
        attempt("onnxruntime-genai", ortgenai)
    if "llamacpp" in peers:
        def llamacpp() -> list[Row]:
            llama = envs.install_llamacpp()
            paths = prepare.gguf_models(hf, work / "gguf", llama, logs)
            return [Row(f"llama.cpp {q}", "llamacpp", paths[q], llama.python,
                        prepare.gguf_weight_bytes(paths[q]), 2, prepare.disk_bytes(paths[q]), env=llama.env())
                    for q in prepare.GGUF_TYPES]
        attempt("llama.cpp", llamacpp)
    if "optimum" in peers:
        def optimum() -> list[Row]:
            py = envs.install_optimum()
            out = []
            for v, d in prepare.optimum_models(hf, work / "optimum", py, logs).items():
                label = "Optimum fp32" if v == "fp32" else "Optimum int8 (dynamic)"
                out.append(Row(label, "optimum", d, py, prepare.onnx_weight_bytes(prepare.first_onnx(d)), 4,
                               prepare.disk_bytes(d)))
            return out
        attempt("Optimum", optimum)
    return rows


def run_row(row: Row, spec: Spec, what: str, timeout: int) -> dict[str, Any]:
    """Measure one row in a fresh process with the peer's interpreter."""
    with tempfile.TemporaryDirectory(prefix="clova-bench-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec.to_dict()))
        cmd = [str(row.python), "-m", "clova_edge.benchmarks.peers.runner", row.peer, str(row.path),
               str(spec_file), str(out_file), "--what", what] + (["--variant", row.variant]
                                                                 if row.variant else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=row.env, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out_file.is_file():
            return {"error": exit_reason(proc.returncode) + (proc.stderr or proc.stdout)[-1500:]}
        return json.loads(out_file.read_text())


def exit_reason(returncode: int) -> str:
    """'killed by SIGILL (illegal instruction): ' for a runner a signal ended, '' otherwise."""
    if returncode >= 0:
        return "" if returncode == 0 else f"exit {returncode}: "
    import signal
    sig = signal.Signals(-returncode)
    hint = {"SIGILL": " (illegal instruction: a build for another CPU)", "SIGKILL": " (out of memory?)",
            "SIGSEGV": " (crash)"}.get(sig.name, "")
    return f"killed by {sig.name}{hint}: "


def describe(row: Row) -> dict[str, Any]:
    return {"label": row.label, "peer": row.peer, "path": str(row.path), "variant": row.variant,
            "disk_bytes": row.disk, "weight_bytes_per_token": row.weight_bytes,
            "kv_elem_bytes": row.kv_elem_bytes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clova_edge.benchmarks.bench")
    ap.add_argument("--models", default="full,smollm2,smollm2-perm")
    ap.add_argument("--peers", default="clova,ortgenai,llamacpp,torch_fp32,optimum")
    ap.add_argument("--only", default="",
                    help="comma-separated substrings of row labels to run (ending in $: the whole label)")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--resume", action="store_true",
                    help="keep rows already in OUT/bench.json (rerun the ones --only names)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--clova-model", type=Path, default=None, help="exported folder to use (one model only)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per runtime run")
    ap.add_argument("--serving", choices=("on", "off", "only"), default="on",
                    help="the serving section: after the rest, not at all, or alone (--only filters it too)")
    ap.add_argument("--llama-bench", default=None,
                    help="GGUF types for llama-bench, e.g. Q4_0 ('' for none; default all, none with --only)")
    a = ap.parse_args(argv)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  (the CLI's own progress lines)
    from clova_edge.export.testmodels import build

    models = [] if a.serving == "only" else ["tiny"] if a.smoke else [m for m in a.models.split(",") if m]
    peers = {"torch_fp32", "clova"} if a.smoke else set(a.peers.split(","))
    only = [s for s in a.only.split(",") if s]
    spec = Spec(threads=a.threads, repetitions=a.repetitions)
    if a.smoke:
        spec = Spec(threads=1, repetitions=1, prompt_lengths=(8, 16), decode_tokens=4, short_context=8,
                    long_context=24, long_decode_tokens=4, vocab_limit=200)
    json_path = a.out / "bench.json"
    keep = a.resume or a.serving == "only"      # the section alone replaces only results["serving"]
    results: dict[str, Any] = json.loads(json_path.read_text()) if keep and json_path.is_file() else {}
    results.update({"machine": machine(), "spec": spec.to_dict(), "install_seconds": envs.install_seconds()})
    # which command measured which rows: a resumed file holds rows of several invocations
    results["invocations"] = [*(results.get("invocations") or [] if a.resume else []), {
        "models": models, "command": "python -m clova_edge.benchmarks.bench " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg": list(os.getloadavg())}]
    if models:
        say("probing read bandwidth ...")
        probes = {str(t): read_bandwidth(t, mib=64 if a.smoke else 512, work=WORK) for t in (1, 2)}
        results["bandwidth_gbs"] = {t: gbs for t, (gbs, _) in probes.items()}
        results["bandwidth_probe"] = probes["1"][1]
    models_out = results.setdefault("models", {})
    for name in models:
        hf = build(name)
        rows = rows_for(name, hf, peers, say, a.clova_model, () if a.smoke else EXTRA_RECIPES, only)
        # the fp32 row first: it writes the reference log-probs and answers the other quality rows
        # compare with
        rows.sort(key=lambda r: r.label != "clova-edge fp32")
        results["install_seconds"] = envs.install_seconds()
        entry = models_out.setdefault(name, {"rows": {}})
        ppl = name in EVAL_MODELS or a.smoke
        qspec = replace(spec, **quality_inputs(hf, a.smoke), reference_dir=str(WORK / name / "reference")) \
            if ppl else spec
        for row in rows:
            if not selected(row.label, only):
                continue
            old = entry["rows"].get(row.label, {})
            # --resume continues a stopped run: a finished row is kept unless --only names it or its files
            # changed since (e.g. re-quantized by a newer recipe)
            if a.resume and not only and "error" not in old.get("result", {"error": "not run"}) \
                    and old.get("disk_bytes") == row.disk:
                continue
            say(f"[{name}] {row.label} ...")
            if ppl:
                run_spec = replace(qspec, write_reference=row.label == "clova-edge fp32")
                what = "ttft,decode" if a.smoke else "none"
            else:
                run_spec, what = first_turn.for_row(row, rows, spec, "ttft,decode,long")   # + the chat turn
            rec = {**describe(row), "result": run_row(row, run_spec, what, a.timeout)}
            if not ppl and row.label in SCALING:
                one = replace(spec, threads=1, prompt_lengths=(512,))
                rec["one_thread"] = run_row(row, one, "ttft,decode", a.timeout)
            entry["rows"][row.label] = rec
            constrained.record(entry)
            if "error" in rec["result"]:
                say(f"  failed: {rec['result']['error'][-300:]}")
            report.write_all(results, a.out)
        wanted = (a.llama_bench if a.llama_bench is not None
                  else ("" if only else ",".join(prepare.GGUF_TYPES)))
        types = [t for t in wanted.split(",") if t]
        if name == "full" and types:
            picked = [r for r in rows if r.peer == "llamacpp" and r.label.split()[-1] in types]
            if picked:
                say(f"[{name}] llama-bench {', '.join(types)} ...")
                entry["llama_bench"] = llama_bench(picked, a.threads, a.repetitions)
                report.write_all(results, a.out)
    if a.serving == "only" or (a.serving == "on" and "full" in models):
        full = rows_for("full", build("full"), {"llamacpp", "clova"}, say, a.clova_model, (), ["int4"])
        served = servers.served_rows(full, a.threads)
        servers.run_section(served, WORK / "logs" / "serving", say, results=results, resume=a.resume,
                            only=only, threads=a.threads, save=lambda: report.write_all(results, a.out))
    results["install_seconds"] = envs.install_seconds()
    report.write_all(results, a.out)
    say(f"wrote {a.out}/bench.json, bench.md, bench.png")
    return 0


def llama_bench(rows: list[Row], threads: int, reps: int) -> list[dict[str, Any]]:
    """llama.cpp's own benchmark on each GGUF: pp512, tg64 at depth 0 and 3500 (a cross-check of the
    binding)."""
    out = []
    for row in rows:
        tool = Path(row.env["LLAMA_CPP_LIB_PATH"]) / "llama-bench"
        cmd = [str(tool), "-m", str(row.path), "-t", str(threads), "-p", "512", "-n", "64", "-d", "0,3500",
               "-r", str(reps), "-o", "json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=row.env)
        try:
            out.append({"label": row.label, "runs": json.loads(proc.stdout)})
        except json.JSONDecodeError:
            out.append({"label": row.label, "error": proc.stderr[-800:]})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
