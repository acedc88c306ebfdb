# JIP: `make install` sets everything up, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: install test lint typecheck pytest bench clean

install: $(VENV)/.installed

# The operator SDK (jip-sdk) comes from sdk/ in the same resolution, never from an index.
$(VENV)/.installed: pyproject.toml sdk/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(PY) -e ./sdk -e '.[workflow,dev]'
	touch $@

lint: install
	$(BIN)/ruff check services sdk tests bench operators dags
	$(BIN)/ruff format --check services/jip sdk/src
	$(BIN)/lint-imports  # the layers and public interfaces of DESIGN.md (pyproject.toml)

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
