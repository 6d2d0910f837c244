# The two commands of the README. The first use creates .venv and installs resnas into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= search_spaces/adaptive.yaml
ARGS ?=

.PHONY: search test lint install clean

$(BIN)/resnas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU-only machines get the CPU build of torch first; with an NVIDIA driver, pip's default (CUDA) build.
	$(BIN)/python -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install -q "torch>=2.4"; \
	  else $(BIN)/python -m pip install -q torch==2.13.0 || \
	       $(BIN)/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; fi; }
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/resnas

install: $(BIN)/resnas

search: $(BIN)/resnas
	$(BIN)/resnas search $(SPEC) $(ARGS)

test: $(BIN)/resnas
	$(BIN)/python -m pytest -q -ra

lint: $(BIN)/resnas
	$(BIN)/ruff check resnas tests experiments
	$(BIN)/ruff format --check resnas tests experiments

clean:
	rm -rf $(VENV) resnas.db .pytest_cache
