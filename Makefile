# Every target installs what it needs into .venv first, so on a fresh machine
# `make demo` and `make test` are the only commands a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch keeps the venv small; override with TORCH=torch for a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test test-all lint bench clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev,ray,bench]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import dynaplan, torch, gymnasium, mujoco, stable_baselines3, ray"
	touch $(BIN)/activate

demo: $(BIN)/activate
	$(BIN)/dynaplan demo

test: $(BIN)/activate
	$(BIN)/python -m pytest -n 2 -q

test-all: $(BIN)/activate
	$(BIN)/python -m pytest -n 2 -q -m ""

lint: $(BIN)/activate
	$(BIN)/ruff check dynaplan tests benchmarks
	$(BIN)/ruff format --check dynaplan tests benchmarks

bench: $(BIN)/activate
	$(BIN)/python benchmarks/planning_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
