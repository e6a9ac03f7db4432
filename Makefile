# Two entry points: `make demo` (the main job on the embedded real Sentinel-1 sample, plus synthetic sets) and `make test`.
# Each builds its own virtual environment from the project's own files (pinned by constraints.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-quick test lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m di3cl_hf.demo --output-dir outputs/demo

demo-quick: $(STAMP)
	$(BIN)/python -m di3cl_hf.demo --output-dir outputs/demo-quick --quick

test: $(STAMP)
	$(BIN)/ruff check di3cl_hf tests examples benchmarks space
	$(BIN)/python -m pytest -q --durations=20

lint: $(STAMP)
	$(BIN)/ruff check di3cl_hf tests examples benchmarks space
	$(BIN)/ruff format --check di3cl_hf tests examples benchmarks space

format: $(STAMP)
	$(BIN)/ruff format di3cl_hf tests examples benchmarks space
	$(BIN)/ruff check --fix di3cl_hf tests examples benchmarks space

clean:
	rm -rf $(VENV) outputs .pytest_cache
