# Roadside: `make demo` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench vectors sizes sysdeps clean

# The virtualenv with the project and its dev extras; redone when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

sysdeps:
	@sh .ci/sysdeps.sh

demo: $(STAMP)
	$(BIN)/roadside demo

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest protocol.errors protocol.link protocol.cbor protocol.mac \
	    protocol.messages protocol.frame protocol.replay protocol.show
	$(BIN)/python -m tools.mpy_check --march xtensawin

bench: $(STAMP)
	$(BIN)/python -m protocol.tests.bench_codec

# Developer helpers: rewrite the golden vectors (review the diff!) and the SPEC size table.
vectors: $(STAMP)
	$(BIN)/python -m protocol.vectors.generate
sizes: $(STAMP)
	$(BIN)/python -m protocol.vectors.sizes --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
