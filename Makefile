# Two commands a person needs: `make run` and `make test`. Both set everything up first through
# scripts/install.sh (the installer CI, the Dockerfiles and the Pi use): the apt packages, then
# .venv and the models. Each step is skipped when already done.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Which apt packages `system` installs; `make test` adds what the tests run for real (ffmpeg,
# GStreamer's RTSP server, Chromium). Target-specific, so `system` inherits it from `test`.
SYSTEM := --system
test: SYSTEM := --system --test-system
# Where the container checks keep their bootstrapped base images (outside the repository).
IMAGE_CACHE ?= /var/tmp/edgeblur-images

.PHONY: install system models run test lint clean fresh-test image-test image-test-arm64

install: $(STAMP) models

system:
	scripts/install.sh $(SYSTEM)

$(STAMP): pyproject.toml scripts/install.sh | system
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

# The container checks (root, podman). fresh-test: in a bare Debian 12 container (python3, git,
# make) clone this commit and type `make run` (until /readyz is 200), then, in another, `make
# test`. image-test: builds ./Dockerfile and runs the
# image offline, read-only, as non-root; -arm64 does the same under qemu emulation.
fresh-test:
	scripts/install.sh --container-system
	IMAGE_CACHE=$(IMAGE_CACHE) tests/fresh/fresh-test.sh --make-run
	IMAGE_CACHE=$(IMAGE_CACHE) tests/fresh/fresh-test.sh

image-test:
	scripts/install.sh --container-system
	IMAGE_CACHE=$(IMAGE_CACHE) tests/fresh/image-test.sh

image-test-arm64:
	scripts/install.sh --container-system
	IMAGE_CACHE=$(IMAGE_CACHE) tests/fresh/image-test.sh --arch arm64

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
