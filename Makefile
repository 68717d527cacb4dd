# `make lab` and `make test` each set up .venv first (once; again when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
# JupyterLab refuses to start as root unless told; containers often run as root.
ROOT_ARGS = $(if $(filter 0,$(shell id -u)),--allow-root,)
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: install lab test unit notebooks weights benchmarks clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[course]"
	touch $@

## Open the course in JupyterLab at notebook 00 (extra options: make lab LAB_ARGS="--no-browser --port 8890").
lab: install
	$(BIN)/jupyter lab $(ROOT_ARGS) $(LAB_ARGS) notebooks/00_start_here.ipynb

## Unit tests plus every notebook under nbval (the command CI runs).
test: install
	$(BIN)/python -m pytest

## Unit tests only (fast).
unit: install
	$(BIN)/python -m pytest tests

## Maintainers: re-execute every notebook in place, in order, each in a fresh kernel.
notebooks: install
	@for nb in $(NOTEBOOKS); do \
		echo "executing $$nb"; \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=600 \
			--ExecutePreprocessor.record_timing=False "$$nb" || exit 1; \
	done

## Rebuild the shipped pretrained weights from scratch (then run `make notebooks`).
weights: install
	$(BIN)/python -m transferlab.pretrain

## Speed benchmarks: feature caching, then every notebook and the whole suite (results in benchmarks/results/).
benchmarks: install
	$(BIN)/python benchmarks/feature_cache.py --epochs 10
	$(BIN)/python benchmarks/notebook_times.py

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

## Notebook 09's grid, Yosinski et al. (2014) at small scale, 1 thread (benchmarks/results/transferability.*).
.PHONY: transferability
transferability: install
	$(BIN)/python benchmarks/transferability.py --threads 1 --jobs 6
