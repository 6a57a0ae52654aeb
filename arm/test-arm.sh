#!/usr/bin/env bash
# arm/test-arm.sh - prove clova-edge on arm64: a Debian arm64 root run under qemu-user emulation (make test-arm).
#   arm/test-arm.sh          build or restore the root, install the runtime as the README tells a Pi user (with the
#                            json extra: llguidance's aarch64 wheel), copy in the exported INT4 test models, run
#                            `clova-edge generate` (plain and --json-schema), the runtime-only tests and the
#                            x86-vs-arm64 greedy comparison
#   arm/test-arm.sh root     only build (or restore) the cached root
#   arm/test-arm.sh shell    an interactive shell in the root (mounted; unmounted on exit)
#   arm/test-arm.sh clean    unmount and delete arm/.root (keeps arm/.cache: the root tarball, wheels and models)
# ARM_CPU=cortex-a76 (Raspberry Pi 5, default) | cortex-a72 (Raspberry Pi 4) | neoverse-n1 picks the emulated CPU;
# ARM_MODELS="tiny smollm2" the test models. Needs root and: apt-get install debootstrap qemu-user-static
# binfmt-support zstd. Results: arm/.cache/results.txt, timings: arm/.cache/timings.txt, tests: arm/.cache/pytest.log
set -euo pipefail
. "$(dirname "$0")/lib.sh"

HOST_PY="$REPO_DIR/.venv/bin/python"
HOST_CLI="$REPO_DIR/.venv/bin/clova-edge"
MODELS="${ARM_MODELS:-tiny smollm2}"
PROMPT="${ARM_PROMPT:-Hello! Who are you?}"
NEW_TOKENS="${ARM_NEW_TOKENS:-12}"
T0=$SECONDS

phase() {  # phase NAME: log the time since the previous phase
    local now=$SECONDS
    [ -n "${PHASE_NAME:-}" ] && printf '%-28s %5ds\n' "$PHASE_NAME" $((now - PHASE_T)) >>"$TIMINGS"
    PHASE_NAME="$1"; PHASE_T=$now
    [ -n "$1" ] && arm_log "== $1"
    return 0
}

# Runtime-only test files: those whose module-level imports need none of the build-time stack (torch, transformers,
# tokenizers, tiktoken, gguf, onnx, clova_edge.export/quant/benchmarks). Tests that importorskip them skip. A Pi has
# only the runtime.
runtime_test_files() {
    local f
    for f in "$REPO_DIR"/tests/test_*.py; do
        [ -e "$f" ] || continue
        grep -qE '^(import|from)[[:space:]]+(torch|transformers|tokenizers|tiktoken|gguf|onnx|onnxscript|onnx_ir|clova_edge\.(export|quant|benchmarks))([[:space:].]|$)' "$f" \
            || echo "tests/$(basename "$f")"
    done
}

# The INT4 test models, made on the host (x86): the tests' exported fixture (tests/conftest.py, cached by exporter
# hash) copied and quantized to INT4 with `clova-edge quantize`, into arm/.cache/models/NAME-HASH (fp32 + int4).
declare -A MODEL_DIR FIXTURE_DIR
export_models() {
    local name fixture out
    for name in $MODELS; do
        fixture="$(cd "$REPO_DIR" && nice "$HOST_PY" -c "import sys; sys.path.insert(0, 'tests'); import conftest
print(conftest.exported_test_model('$name'))" | tail -n 1)"
        out="$ARM_CACHE/models/$(basename "$fixture")"
        MODEL_DIR[$name]="$out" FIXTURE_DIR[$name]="$fixture"
        [ -f "$out/model.int4.acc0kv32.onnx" ] && grep -q '"int4"' "$out/manifest.json" && continue
        rm -rf "$out.part" && mkdir -p "$ARM_CACHE/models" && cp -r "$fixture" "$out.part"
        nice "$HOST_CLI" quantize "$out.part" --bits 4 >"$ARM_CACHE/quantize-$name.log" 2>&1 \
            || { tail -n 5 "$ARM_CACHE/quantize-$name.log"; arm_die "clova-edge quantize $out.part failed"; }
        nice "$HOST_PY" - "$out.part" <<'PY'
import sys, onnx  # the strict check's graph: the same INT4 weights, MatMulNBits computing in fp32 (accuracy_level 0)
from onnx import TensorProto  # and a float KV cache (an int8 cache rounds x/scale: a 1e-7 difference can flip a level)
folder = sys.argv[1]
m = onnx.load(f"{folder}/model.int4.onnx", load_external_data=False)
from clova_edge.quant.prefill_attention import strip_prefill_attention
strip_prefill_attention(m)  # one int8 GroupQueryAttention per layer again (prompt chunks take its float path)
for a in (a for n in m.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"):
    a.i = 0
scales = set()
for n in (n for n in m.graph.node if n.op_type == "GroupQueryAttention"):
    scales |= set(n.input[12:])
    del n.input[12:]
    keep = [a for a in n.attribute if a.name not in ("k_quant_type", "v_quant_type", "kv_cache_bit_width")]
    del n.attribute[:]
    n.attribute.extend(keep)
inits = [i for i in m.graph.initializer if i.name not in scales]
del m.graph.initializer[:]
m.graph.initializer.extend(inits)
for vi in list(m.graph.input) + list(m.graph.output):
    if vi.name.startswith(("past_key_values.", "present.")):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT
# float16-scale nodes (quant/rewrite.py: Cast -> MatMulNBits/GatherBlockQuantized in float16 -> Cast) become float32
# nodes with the same scales (float16 values are exact in float32): an arm64 CPU with float16 arithmetic would
# otherwise compute them natively, which is not the fp32 reference this check needs
from onnx import numpy_helper
half = {n.input[2] for n in m.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
for i, t in enumerate(m.graph.initializer):
    if t.name in half and t.data_type == TensorProto.FLOAT16:
        onnx.external_data_helper.load_external_data_for_tensor(t, folder)
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name))
for n in m.graph.node:   # Casts become Identity: float32 flows through
    if n.op_type == "Cast" and (n.output[0].endswith("/to_f16") or n.input[0].endswith(("/out_f16", "/gbq_f16"))):
        n.op_type = "Identity"
        del n.attribute[:]
onnx.save(m, f"{folder}/model.int4.acc0kv32.onnx")
PY
        rm -rf "$out" && mv "$out.part" "$out"
    done
    for name in $MODELS; do  # drop exports made by older exporter versions
        for out in "$ARM_CACHE/models/$name"-*; do
            if [ -d "$out" ] && [ "$out" != "${MODEL_DIR[$name]}" ]; then rm -rf -- "$out"; fi  # (an && chain's
            # false test would be the function's status and stop the script under set -e)
        done
    done
}

install_runtime() {  # the README's Pi install, offline: pip install '.[json,serve]' into the venv, from the wheelhouse
    rm -rf "$ARM_ROOT/opt/src" && mkdir -p "$ARM_ROOT/opt/src"
    (cd "$REPO_DIR" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$ARM_ROOT/opt/src" -xf -
    arm_sync_wheels   # a root cached before llguidance and jsonschema joined the wheelhouse gets them here
    arm_chroot /opt/venv/bin/pip install -q --no-index --find-links /opt/wheels '/opt/src[json,serve]'
    arm_chroot /opt/venv/bin/pip install -q --no-index --find-links /opt/wheels "${ARM_TEST_DEPS[@]}"
    arm_chroot /opt/venv/bin/python -c "import sys, clova_edge, onnxruntime, numpy, llguidance
from importlib.metadata import version
assert 'torch' not in sys.modules
print('clova_edge', clova_edge.__version__, 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__,
      'llguidance', version('llguidance'))"
    arm_chroot /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
        || arm_die "torch is installed in the arm64 venv: the runtime must not need it"
}

copy_models() {
    rm -rf "$ARM_ROOT/opt/models" "$ARM_ROOT/opt/test-models" && mkdir -p "$ARM_ROOT/opt/models" "$ARM_ROOT/opt/test-models"
    local name
    for name in $MODELS; do
        cp -r "${MODEL_DIR[$name]}" "$ARM_ROOT/opt/models/$name"            # fp32 + int4: generate, greedy check
        cp -r "${FIXTURE_DIR[$name]}" "$ARM_ROOT/opt/test-models/$name"     # the tests' own fixture (fp32 only)
    done
}

run_generate() {  # `clova-edge generate --json`, greedy, on both sides: reported (see run_greedy_check for why)
    local name x86 arm
    for name in $MODELS; do
        x86="$("$HOST_CLI" generate "$PROMPT" --model "${MODEL_DIR[$name]}" --variant int4 --json \
               --max-new-tokens "$NEW_TOKENS" --temperature 0)" || x86='{"error": "failed on x86"}'
        arm="$(arm_chroot /opt/venv/bin/clova-edge generate "$PROMPT" --model "/opt/models/$name" --variant int4 --json \
               --max-new-tokens "$NEW_TOKENS" --temperature 0)" || arm='{"error": "failed on arm64"}'
        python3 - "$name" "$x86" "$arm" <<'PY' | tee -a "$RESULTS" || FAILED=1
import json, sys
name, x86, arm = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for side, r in (("x86  ", x86), ("arm64", arm)):
    print(f"{name} int4 clova-edge generate {side}: {r.get('tokens', r.get('error'))} {r.get('text', '')!r} "
          f"(decode {r.get('decode_tps', '-')} tok/s)")
same = "tokens" in x86 and x86.get("tokens") == arm.get("tokens") and x86.get("text") == arm.get("text")
print(f"{name} int4 clova-edge generate: {'tokens and text identical' if same else 'different (int8 activations)'}")
sys.exit(0 if "tokens" in x86 and "tokens" in arm else 1)
PY
    done
    run_generate_json_schema
}

# `clova-edge generate --json-schema` (llguidance) under emulation: the answer must parse and validate against the
# README's example schema, and end because the grammar closed (finish_reason "stop"), on both models.
run_generate_json_schema() {
    local name arm schema=examples/person.schema.json
    for name in $MODELS; do
        arm="$(arm_chroot /opt/venv/bin/clova-edge generate "Describe a fictional person as JSON." \
               --model "/opt/models/$name" --variant int4 --json --json-schema "/opt/src/$schema" \
               --max-new-tokens 200 --temperature 0)" || arm='{"error": "failed on arm64"}'
        "$HOST_PY" - "$name" "$arm" "$REPO_DIR/$schema" <<'PY' | tee -a "$RESULTS" || FAILED=1
import json, sys
import jsonschema
name, r, schema = sys.argv[1], json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
try:
    jsonschema.validate(json.loads(r["text"]), schema)
    ok = r["finish_reason"] == "stop"
except (KeyError, ValueError, jsonschema.ValidationError) as e:
    ok, r = False, {**r, "error": r.get("error", str(e))}
print(f"{name} int4 clova-edge generate --json-schema arm64: {r.get('text', r.get('error'))} "
      f"({r.get('generated_tokens', '-')} tokens, finish {r.get('finish_reason', '-')}): "
      f"{'parses and validates' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
PY
    done
}

# Greedy ids + per-step logits with a bare onnxruntime session. The INT4 graph as exported computes MatMulNBits with
# int8 activations (accuracy_level 4) where the CPU has int8 dot products (x86 AVX2/VNNI, Cortex-A76 = Pi 5), each
# platform rounding its own way, else in fp32 (Cortex-A72 = Pi 4). So: (1) strict - the same INT4 weights computed in
# fp32 with a float KV cache (model.int4.acc0kv32.onnx) must give identical tokens and logits within 1e-5 x max|logit|; (2) the graph as
# exported must deviate from that reference on arm64 by at most 2x what it does on x86; (3) x86 vs arm64 as exported
# is reported.
run_greedy_check() {
    local name d x86 arm
    mkdir -p "$ARM_ROOT/opt/out"
    for name in $MODELS; do
        d="${MODEL_DIR[$name]}" x86="$ARM_CACHE/greedy-$name-x86" arm="$ARM_CACHE/greedy-$name-$ARM_CPU"
        nice "$HOST_PY" "$ARM_DIR/greedy_check.py" dump "$d" "$x86-acc0.npz" --file model.int4.acc0kv32.onnx
        nice "$HOST_PY" "$ARM_DIR/greedy_check.py" dump "$d" "$x86-int4.npz"
        arm_chroot /opt/venv/bin/python /opt/src/arm/greedy_check.py dump "/opt/models/$name" /opt/out/acc0.npz \
            --file model.int4.acc0kv32.onnx
        arm_chroot /opt/venv/bin/python /opt/src/arm/greedy_check.py dump "/opt/models/$name" /opt/out/int4.npz
        cp "$ARM_ROOT/opt/out/acc0.npz" "$arm-acc0.npz" && cp "$ARM_ROOT/opt/out/int4.npz" "$arm-int4.npz"
        {
            echo "== $name INT4 weights, fp32 compute (accuracy_level 0): x86 vs arm64 $ARM_CPU - must be identical"
            "$HOST_PY" "$ARM_DIR/greedy_check.py" compare "$x86-acc0.npz" "$arm-acc0.npz" || FAILED=1
            echo "== $name INT4 as exported (accuracy_level 4): deviation from that reference, x86 vs arm64 $ARM_CPU"
            "$HOST_PY" "$ARM_DIR/greedy_check.py" noise "$x86-acc0.npz" "$x86-int4.npz" "$arm-int4.npz" || FAILED=1
            echo "== $name INT4 as exported: x86 vs arm64 $ARM_CPU (reported, not required)"
            "$HOST_PY" "$ARM_DIR/greedy_check.py" compare "$x86-int4.npz" "$arm-int4.npz" --report
        } 2>&1 | tee -a "$RESULTS"
    done
}

# `clova-edge serve` under emulation (the serve extra from its aarch64 wheels): start it on a loopback port, wait for
# /health (bounded), answer one chat completion through the OpenAI route, stop it.
run_serve() {
    local port=18471 name="${MODELS%% *}" pid ok=""
    arm_chroot /opt/venv/bin/clova-edge serve "/opt/models/$name" --variant int4 --port "$port" --slots 2 \
        >"$ARM_CACHE/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { ok=1; break; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    local reply=""
    if [ -n "$ok" ]; then
        reply="$(curl -s --max-time 300 "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
            -d "{\"model\": \"$name\", \"messages\": [{\"role\": \"user\", \"content\": \"$PROMPT\"}], \"max_tokens\": 8}")"
    fi
    # $! is the subshell running arm_chroot; the server is its child (qemu), found by its command line
    pkill -f "clova-edge serve /opt/models/$name --variant int4 --port $port" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do pgrep -f "clova-edge serve /opt/models/$name" >/dev/null || break; sleep 1; done
    pkill -9 -f "clova-edge serve /opt/models/$name" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if printf '%s' "$reply" | "$HOST_PY" -c "import json, sys; r = json.load(sys.stdin)
assert r['object'] == 'chat.completion' and r['usage']['completion_tokens'] >= 1, r
print('serve arm64: answered', r['usage']['completion_tokens'], 'tokens:', repr(r['choices'][0]['message']['content']))" \
        >>"$RESULTS" 2>&1; then
        tail -n 1 "$RESULTS"
    else
        echo "serve arm64: FAILED (reply: ${reply:0:200}); log: $(tail -n 3 "$ARM_CACHE/serve.log")" | tee -a "$RESULTS"
        FAILED=1
    fi
}

run_tests() {
    local files
    mapfile -t files < <(runtime_test_files)
    [ "${#files[@]}" -gt 0 ] || { arm_log "no runtime-only test files found"; return 0; }
    echo "runtime-only tests under arm64: ${files[*]}" >>"$RESULTS"
    # The tests run against the installed package: from a folder holding only tests/, README.md and pyproject.toml
    # (the source tree's clova_edge/ in the working directory would shadow the installed package).
    rm -rf "$ARM_ROOT/opt/tests-run" && mkdir -p "$ARM_ROOT/opt/tests-run"
    # runtime/ too: a test reads its sources (import rules); it is not importable as clova_edge from there.
    # examples/: the README's example files, which its tests use.
    cp -r "$ARM_ROOT/opt/src/tests" "$ARM_ROOT/opt/src/runtime" "$ARM_ROOT/opt/src/README.md" \
        "$ARM_ROOT/opt/src/pyproject.toml" "$ARM_ROOT/opt/src/examples" "$ARM_ROOT/opt/tests-run/"
    # -k 'not quantize': those tests import clova_edge.quant (onnx) inside the test, which a Pi does not have.
    # -rs: pytest.log says why each skipped test skipped (the results keep the rest of the summary).
    arm_chroot /bin/sh -c "cd /opt/tests-run && CLOVA_EDGE_TEST_MODELS=/opt/test-models /opt/venv/bin/pytest -q \
        -p no:cacheprovider --durations=8 -rs -k 'not quantize' ${files[*]}" >"$ARM_CACHE/pytest.log" 2>&1 || FAILED=1
    grep -v '^SKIPPED' "$ARM_CACHE/pytest.log" | tail -n 14 | tee -a "$RESULTS"   # skip reasons (-rs): pytest.log
}

main() {
    TIMINGS="$ARM_CACHE/timings.txt"; RESULTS="$ARM_CACHE/results.txt"; FAILED=0
    : >"$RESULTS"; echo "# test-arm $(date -u +%FT%TZ) ARM_CPU=$ARM_CPU load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TIMINGS"
    local restored=cached; [ -e "$ARM_ROOT/.clova-stage-venv" ] || { [ -e "$ARM_TARBALL" ] && restored=tarball || restored=scratch; }
    phase "root ($restored)"; arm_ensure_root
    phase "export models (host)"; export_models
    arm_mount_all
    phase "pip install .[json] (arm64)"; install_runtime
    copy_models
    phase "clova-edge generate"; run_generate
    phase "greedy x86 vs arm64"; run_greedy_check
    phase "clova-edge serve (arm64)"; run_serve
    phase "runtime tests (arm64)"; run_tests
    phase ""
    printf '%-28s %5ds\n' "total" $((SECONDS - T0)) >>"$TIMINGS"
    arm_umount_all
    cat "$RESULTS"; tail -n 9 "$TIMINGS"
    [ "$FAILED" = 0 ] || arm_die "test-arm FAILED (see $RESULTS)"
    arm_log "test-arm passed in $((SECONDS - T0))s"
}

trap 'arm_umount_all' EXIT
arm_preflight
mkdir -p "$ARM_CACHE"
exec 9>"$ARM_CACHE/lock"
flock -n 9 || arm_die "another test-arm run holds $ARM_CACHE/lock"

case "${1:-all}" in
    all) main ;;
    root) arm_ensure_root ;;
    shell) arm_ensure_root; arm_mount_all; arm_chroot /bin/bash -i || true ;;
    clean) arm_remove_root ;;
    *) arm_die "unknown command ${1}" ;;
esac
