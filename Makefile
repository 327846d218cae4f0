# The README's two set-up commands:
#   make train   install aevb and run the main job (a VAE on Fashion-MNIST -> runs/...)
#   make test    install aevb with its dev tools and run the test suite
#   make docs    build the documentation site (docs/_build/html), warnings as errors
# VENV picks the virtual environment (default .venv); ARGS are extra `aevb train` arguments.
# TEST_WORKERS: pytest-xdist processes for `make test` (default: one per core, each on its share
# of the threads; 0 runs serially).

VENV ?= .venv
PYTHON ?= python3
TEST_WORKERS ?= auto
PY := $(VENV)/bin/python

.PHONY: install install-dev data train test lint docs

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -e .

install-dev: $(PY)
	$(PY) -m pip install -e ".[dev]"

data:
	bash scripts/get_data.sh

train: install data
	$(VENV)/bin/aevb train --config vae_fashion $(ARGS)

test: install-dev data
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

docs: install-dev data
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

lint: install-dev
	$(VENV)/bin/ruff check .
