# Roadside: `make demo` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ESP32_STUBS := $(VENV)/esp32-stubs/.installed-stamp

.PHONY: demo test lint bench vectors sizes sysdeps clean

# The virtualenv with the project and its dev extras; redone when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# The ESP32 port's stubs live apart from the venv's site-packages: they replace the standard
# library's stubs, which only the firmware's type check may see.
$(ESP32_STUBS): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade \
	    --target $(VENV)/esp32-stubs 'micropython-esp32-stubs==1.29.*'
	@touch $@

sysdeps:
	@sh .ci/sysdeps.sh

# Three emulated boards on the real firmware (a flooding street, a busy road, a dry street),
# the real gateway, its own broker (Mosquitto, else amqtt) and a live dashboard at 10x: the
# first flood alarm within 20 s. Ctrl-C stops everything. Options: make demo DEMO_ARGS=
# '--duration 90 --capture run.jsonl', then python -m hil_tests.demo.plot run.jsonl -o run.png.
demo: $(STAMP)
	$(BIN)/python -m hil_tests.demo $(DEMO_ARGS)

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest

lint: $(STAMP) $(ESP32_STUBS)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy --config-file firmware/mypy-esp32.ini
	$(BIN)/python -m mypy.stubtest protocol.errors protocol.link protocol.cbor protocol.mac \
	    protocol.messages protocol.frame protocol.replay protocol.show
	$(BIN)/python -m tools.mpy_check --march xtensawin

# Codec ratios, then the gateway end to end (issue 4: needs mosquitto and 2 CPUs, ~5 min;
# `$(BIN)/python -m gateway.tests.bench_gateway --quick` takes ~2 min).
bench: $(STAMP)
	$(BIN)/python -m protocol.tests.bench_codec
	$(BIN)/python -m gateway.tests.bench_gateway

# Developer helpers: rewrite the golden vectors (review the diff!) and the SPEC size table.
vectors: $(STAMP)
	$(BIN)/python -m protocol.vectors.generate
sizes: $(STAMP)
	$(BIN)/python -m protocol.vectors.sizes --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
