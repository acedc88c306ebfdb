# JIP: `make install` sets everything up, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: install test lint typecheck pytest bench clean images offline-bundle checkov-venv

install: $(VENV)/.installed
	$(PY) -m jip.ui.ohif_fetch  # OHIF for /viewer: pinned, integrity-checked, once

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

# Every image a site runs (base from mmdebstrap, jip, airflow, the operator SDK base, then
# one per operator FROM it), built with podman; digests in build/images.json.
# BASE=python:3.11-slim where a registry is.
images: install
	nice -n 10 $(PY) deploy/images.py $(if $(BASE),--base $(BASE))

# One archive for a site without internet access: images, chart, install script.
offline-bundle: images
	$(PY) deploy/offline_bundle.py

# Checkov (tests/charts/test_checkov.py) in its own environment: it pins older boto3,
# packaging and networkx than JIP's.
checkov-venv: build/checkov-venv/bin/checkov

build/checkov-venv/bin/checkov: | install
	$(BIN)/uv venv --quiet --python $(PYTHON) build/checkov-venv
	$(BIN)/uv pip install --quiet --python build/checkov-venv/bin/python 'checkov==3.3.30'

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
