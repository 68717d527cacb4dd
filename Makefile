# `make lab` and `make test` each set up .venv first (once; again when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
# JupyterLab refuses to start as root unless told; containers often run as root.
ROOT_ARGS = $(if $(filter 0,$(shell id -u)),--allow-root,)
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

# Target names: verbs for the everyday work (install, lab, test, unit, lint, ...), bench-* for the benchmarks,
# check-* for the checks outside `make test`, and the teachers' editions by name (student, revision, handouts).
.PHONY: help install lock lab test unit lint typecheck notebooks weights clean
.PHONY: bench-speed bench-table bench-repeat bench-cache bench-batch bench-layout bench-suite bench-photos bench-peft bench-shift \
	bench-unfreezing bench-transferability
.PHONY: student revision handouts
.PHONY: check-exercises check-browser check-launches check-python312 check-python313

## List the targets with what each does (this text).
help:
	@awk '/^## /{doc = doc substr($$0, 4) " "; next} /^[a-z0-9-]+:/{if (doc) printf "  %-22s %s\n", substr($$1, 1, length($$1) - 1), doc; doc = ""; next} /^$$/{doc = ""}' $(MAKEFILE_LIST)

## Set up .venv (Python 3.11 by default: make PYTHON=/path/to/python3.12 install) with the locked versions: the
## course and the maintainers' tools (the [dev] extra: ruff, basedpyright, pre-commit).
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e ".[dev]"
	touch $@

## Maintainers: rewrite constraints.txt (the lock) from what the .venv has installed, after changing a range.
lock: install
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^transferlab'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

## Open the course in JupyterLab at notebook 00 (extra options: make lab LAB_ARGS="--no-browser --port 8890").
## LAB_DIR=build/student opens the student edition instead (a copy outside git; run `make student` first).
## The course's JupyterLab settings (jupyter-config/: no news pop-up) are added to the learner's own.
LAB_DIR ?= notebooks
lab: install
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter-config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
		$(BIN)/jupyter lab $(ROOT_ARGS) $(LAB_ARGS) $(LAB_DIR)/00_start_here.ipynb

## Unit tests plus every notebook under nbval (the command CI runs): two pytest-xdist workers, one per core; each
## test file (each notebook) runs whole on one worker (why two and not three: README, "Measured figures").
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

## Unit tests and docstring examples only (no notebook, no kernel-starting `slow` test).
unit: install
	$(BIN)/python -m pytest tests src -m "not slow" -n 2 -o addopts="-p no:cacheprovider --doctest-modules"

## Lint and format-check the package, tests and benchmarks (rules in ruff.toml), type-check src/ (basedpyright);
## CI runs it before the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/basedpyright

## Type-check src/ with basedpyright (pyright's "basic" rules; settings in pyproject.toml).
typecheck: install
	$(BIN)/basedpyright

## Maintainers: re-execute every notebook in place, in order, each in a fresh kernel (one thread, as in `make test`).
notebooks: install
	@for nb in $(NOTEBOOKS); do \
		echo "executing $$nb"; \
		OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=600 \
			--ExecutePreprocessor.record_timing=False "$$nb" || exit 1; \
	done

## Rebuild the shipped pretrained weights from scratch (then run `make notebooks`).
weights: install
	$(BIN)/python -m transferlab.pretrain

## Speed benchmarks: feature caching, then every notebook and the whole suite (results in src/transferlab/results/).
bench-speed: install
	$(BIN)/python benchmarks/feature_cache.py --epochs 10
	$(BIN)/python benchmarks/notebook_times.py

# Accuracy benchmarks (benchmarks/transfer_gain.py; one thread per run; results in src/transferlab/results/).
TRANSFER = $(BIN)/python benchmarks/transfer_gain.py --threads 1

## Notebook 05's table (k = 1, 5, 20, all x 5 seeds; every method's learning rate chosen on validation from one grid,
## 3e-4 ... 3e-2): the commands that made it, one process of one thread at a time (benchmarks/transfer_table.sh).
bench-table: install
	bash benchmarks/transfer_table.sh $(BIN)/python

## Repeat check: k=5, seed 0, the whole grid again; fails unless every accuracy equals the table's run (same machine,
## 1 thread).
bench-repeat: install
	$(TRANSFER) --ks 5 --seed-list 0 --convergence-ks --name repeat_check_t1 \
		--compare src/transferlab/results/transfer_gain.json --must-match

## Feature-cache speed-up, several repeats (src/transferlab/results/feature_cache.json).
bench-cache: install
	$(BIN)/python benchmarks/feature_cache.py --epochs 10 --repeats 5

## Eval-mode forward time against the batch size, TinyResNet and Lite0, one thread (eval_batch_size.json).
bench-batch: install
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/eval_batch_size.py

## NCHW vs channels-last memory order: eval pass and training step, TinyResNet and Lite0, one thread (channels_last.json).
bench-layout: install
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/channels_last.py

## Whole suite serial vs pytest-xdist (-n 2 --dist loadfile, as make test), both must pass (src/transferlab/results/suite_time.json).
bench-suite: install
	$(BIN)/python benchmarks/suite_time.py

## Teachers: student edition (solutions replaced by stubs, exercise outputs cleared) in build/student/.
student: install
	$(BIN)/python -m coursetools.editions student

## Revision copies (fastbook's "clean" notebooks: headings and code, no prose, no outputs) in build/clean/.
revision: install
	$(BIN)/python -m coursetools.editions clean

## Self-contained HTML handouts of the executed notebooks (images inline, map links between them) in build/handouts/.
handouts: install
	$(BIN)/python -m coursetools.editions handouts

## Every exercise's self-check fails with its message when the solution is a stub or a wrong answer (slow).
check-exercises: install
	$(BIN)/python -m pytest tests/test_exercises.py -m exercises -n 2

## The torchrun launches of tests/test_distributed.py (2 processes each; outside the suite).
check-launches: install
	$(BIN)/python -m pytest tests/test_distributed.py -m launches

## Python 3.12: a fresh venv outside the checkout, the README's command, then the unit tests and notebook 09 there.
check-python312:
	bash .ci/check-python 3.12 editable

## Python 3.13: the built wheel in a fresh venv outside the checkout (weights load, stored results found), then the
## unit tests against the installed package and notebook 09 from a folder that is not the checkout.
check-python313:
	bash .ci/check-python 3.13 wheel

## JupyterLab in headless Chromium (Debian's chromium; skipped with a reason where it is missing, fails in CI).
check-browser: install
	$(BIN)/python -m pytest tests/test_browser.py tests/test_lab.py -m browser

## Real photos, few labels: the few-shot and source-choice tables of notebook 08 (src/transferlab/results/real_photos.*).
bench-photos: install
	$(BIN)/python benchmarks/real_photos.py

## Notebook 13's tables: probe, BitFit, LoRA r=2/8, full fine-tuning, every rate chosen per seed on validation; on
## the digits (TinyResNet, peft_compare.json), then on real photos (Lite0 from ImageNet, peft_photos.json); one
## process, one thread, one after the other; a method whose choice sat on the grid's edge gets the next rate
## (--extend). The longest benchmark: its CPU time is in README, "Measured figures".
R = src/transferlab/results
bench-peft: install
	$(BIN)/python benchmarks/peft_compare.py --threads 1
	$(BIN)/python benchmarks/peft_compare.py --threads 1 --methods bitfit --lrs 0.1 --name peft_more_rates
	$(BIN)/python benchmarks/peft_compare.py --extend $(R)/peft_compare.json $(R)/peft_more_rates.json
	$(BIN)/python benchmarks/peft_photos.py --threads 1
	$(BIN)/python benchmarks/peft_photos.py --threads 1 --methods probe --lrs 1.0 --name peft_photos_more_rates
	$(BIN)/python benchmarks/peft_photos.py --threads 1 --methods full --lrs 1e-5 --name peft_photos_more_rates_full
	$(BIN)/python benchmarks/peft_photos.py --extend $(R)/peft_photos.json $(R)/peft_photos_more_rates.json
	$(BIN)/python benchmarks/peft_photos.py --extend $(R)/peft_photos.json $(R)/peft_photos_more_rates_full.json

## Notebook 10's grid: 5 source seeds x 4 shifts (AdaBN and its source-domain control, the pool-size sweep, bn1 only,
## few-label heads, label shift), one thread (src/transferlab/results/domain_shift.json).
bench-shift: install
	$(BIN)/python benchmarks/domain_shift.py --threads 1

## Notebook 07's comparison: six fine-tuning recipes tuned on validation, 5 seeds, 2 processes of 1 thread
## (src/transferlab/results/unfreezing.json).
bench-unfreezing: install
	$(BIN)/python benchmarks/unfreezing.py --threads 1 --jobs 2

## Remove .venv, the caches and build/ (editions, handouts, wheels).
clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

## Notebook 09's grid, Yosinski et al. (2014) at small scale, one process of 1 thread (src/transferlab/results/transferability.*).
## A fair grid: the same data and budget for donors and every run, a convergence check, 2,600 test images.
JOBS ?= 1
bench-transferability: install
	$(BIN)/python benchmarks/transferability.py --threads 1 --jobs $(JOBS)
