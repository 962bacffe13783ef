# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PIP := $(PY) -m pip install --quiet --quiet --disable-pip-version-check

.PHONY: install install-dev demo test lint typecheck pytest fmt bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# the demo needs only what the service runs on; the developer tools come with `make test`
$(STAMP): pyproject.toml | $(PY)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml $(STAMP)
	$(PIP) -e '.[dev]'
	touch $(DEV_STAMP)

install: $(STAMP)
install-dev: $(DEV_STAMP)

demo: install
	$(VENV)/bin/aftercare demo

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy

pytest: install-dev
	$(PY) -m pytest

test: lint typecheck pytest

fmt: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install-dev
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
