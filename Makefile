# chemfit-workflow: `make run` fits the default configuration, `make test` runs the tests.
# Both create .venv on first use and install everything into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint bench clean

install: $(STAMP)

# CPU torch is pinned: an unpinned torch pulls the multi-GB CUDA build. GPU users
# install their CUDA build of torch first (see README); pip then keeps it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	snakemake --cores all

test: install
	pytest
	$(MAKE) --no-print-directory lint

# ruff (rules and line length in pyproject.toml), the Snakemake formatter and linter, and the
# import-layer contracts (pyproject.toml [tool.importlinter]): science and engine never import
# the config or the stages.
lint: install
	ruff check .
	ruff format --check .
	snakefmt --check .
	snakemake --lint
	lint-imports

bench: install
	python bench/async_overhead.py
	python bench/relax_throughput.py
	python bench/workflow_overhead.py
	python bench/cache_rerun.py

clean:
	rm -rf results logs benchmarks work .snakemake
