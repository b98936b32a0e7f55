# Two commands a person needs: `make run` and `make test`. Both set everything up first,
# through scripts/install.sh (the same installer CI, the Dockerfiles and the Pi use).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models run test lint clean

install: $(STAMP) models

$(STAMP): pyproject.toml scripts/install.sh
	scripts/install.sh --venv $(VENV) --extras test --editable
	touch $@

# Idempotent: models already in the cache are only re-verified.
models: $(STAMP)
	$(BIN)/edgeblur models fetch

run: install
	$(BIN)/edgeblur serve

test: install
	$(BIN)/ruff check edge service tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check edge service tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
