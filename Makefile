# The two commands of the README. Each sets itself up: a .venv with `pip install -e .[test]`,
# redone only when setup.py or pyproject.toml changed (tracked by a stamp file).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
DATA_DIR ?= $(CURDIR)/data
# Keep freed memory in glibc's arenas: large-batch CPU runs are allocator-bound otherwise.
export GLIBC_TUNABLES ?= glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

.PHONY: setup demo test lint bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): setup.py pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m lmr_jax.demo --data_dir=$(DATA_DIR) --out_dir=$(CURDIR)/out/demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest workers (pytest-xdist): most tests are XLA-compile-bound on one core each.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS)

bench: setup
	$(PY) -m pip install -q -e ".[test,bench]"
	$(PY) experiments/benchmarks/smpl_forward.py
