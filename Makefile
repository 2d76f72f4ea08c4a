# Everything a fresh machine with Python 3.11 and pip needs. torch is pinned to the CPU wheel that
# this project's machines carry, so no CUDA packages are pulled; on a GPU machine with torch already
# installed, skip the venv: PYTHONPATH=src python3 -m lorainit ...
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed  ## the quick teacher-student study: findings printed, plots in runs/toy-quick
	$(VENV)/bin/lorainit toy --preset quick --out runs/toy-quick

test: $(VENV)/.installed  ## lint and format check (ruff: pyflakes, syntax, import order, layout), then the test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --durations=15 tests

test-fast: $(VENV)/.installed  ## the suite without the slow tests (real models, several processes): a couple of minutes
	$(PY) -m pytest -q -m "not slow" tests

bench: $(VENV)/.installed  ## toy benchmark on this machine (the committed results come from the GPU)
	$(PY) bench/toy_batched.py --out bench/results/toy_batched_$$(hostname).json

clean:
	rm -rf $(VENV) runs
