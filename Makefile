# Two commands a person needs: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models run test lint bench-recall clean

install: $(STAMP) models

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Idempotent: models already in the cache are only re-verified.
models: $(STAMP)
	$(BIN)/edgeblur models fetch

run: install
	$(BIN)/edgeblur serve

test: install
	$(BIN)/ruff check edge service tests bench
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check edge service tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
