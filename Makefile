# `make lab` and `make test` each set up .venv first (once; again when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
# JupyterLab refuses to start as root unless told; containers often run as root.
ROOT_ARGS = $(if $(filter 0,$(shell id -u)),--allow-root,)
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: install lab test unit notebooks weights benchmarks clean
.PHONY: student clean-notebooks handouts check-exercises check-browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[course]"
	touch $@

## Open the course in JupyterLab at notebook 00 (extra options: make lab LAB_ARGS="--no-browser --port 8890").
## LAB_DIR=build/student opens the student edition instead (a copy outside git; run `make student` first).
## The course's JupyterLab settings (jupyter-config/: no news pop-up) are added to the learner's own.
LAB_DIR ?= notebooks
lab: install
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter-config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
		$(BIN)/jupyter lab $(ROOT_ARGS) $(LAB_ARGS) $(LAB_DIR)/00_start_here.ipynb

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

## Teachers: student edition (solutions replaced by stubs, exercise outputs cleared) in build/student/.
student: install
	$(BIN)/python -m transferlab.editions student

## Revision copies (fastbook's "clean" notebooks: headings and code, no prose, no outputs) in build/clean/.
clean-notebooks: install
	$(BIN)/python -m transferlab.editions clean

## Self-contained HTML handouts of the executed notebooks (images inline, map links between them) in build/handouts/.
handouts: install
	$(BIN)/python -m transferlab.editions handouts

## Every exercise's self-check fails with its message when the solution is a stub (runs each notebook; slow).
check-exercises: install
	$(BIN)/python -m pytest tests/test_exercises.py -m exercises

## JupyterLab in headless Chromium (Debian's chromium; skipped with a reason where it is missing, fails in CI).
check-browser: install
	$(BIN)/python -m pytest tests/test_browser.py -m browser

## Real photos, few labels: the few-shot and source-choice tables of notebook 08 (benchmarks/results/real_photos.*).
.PHONY: benchmark-real-photos
benchmark-real-photos: install
	$(BIN)/python benchmarks/real_photos.py

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
