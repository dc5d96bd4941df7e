# The two entry points of the README: `make demo` and `make test`.
# Both create their own virtual environment so they work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench bench-core clean cli-docs openapi venv browser

# Rebuilt when the packaging or the compiled decoder's source changes (the editable install
# builds seqvault/native_decode.c, native_append.c and native_crc.c in place).
$(STAMP): pyproject.toml setup.py seqvault/native_decode.c seqvault/native_append.c seqvault/native_crc.c
	@PY=$(PY) sh scripts/ensure_sysdeps.sh  # libzstd-dev, zlib1g-dev: apt-get installs them if missing
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[server,bench,torch,cluster,dev]'
	# A venv made before the move from hatchling keeps an empty site-packages/seqvault after the
	# reinstall; as a namespace package it would shadow the editable install.
	find $(VENV)/lib -maxdepth 3 -path '*site-packages/seqvault' -type d -empty -delete
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m seqvault.demo

lint: $(STAMP)
	$(BIN)/ruff check seqvault tests bench
	$(BIN)/mypy seqvault
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml

unit: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint unit

# Headless Chromium for the /ui browser tests: apt-get installs it if missing and possible.
browser:
	@sh scripts/ensure_chromium.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-core: $(STAMP)
	$(BIN)/python -m bench.core_bench

# Regenerate the generated references (tests fail when they are stale).
cli-docs: $(STAMP)
	$(BIN)/python -m seqvault.cli.docs

openapi: $(STAMP)
	$(BIN)/python -m seqvault.server.openapi

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache seqvault/*.so
