# Two commands matter: `make test` and `make demo`. Both call `setup`, which is idempotent.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STUBS   := typings
# command:package pairs the tests need from Debian (the broker tests start their own mosquitto)
DEBS    := mosquitto:mosquitto mosquitto_sub:mosquitto-clients openssl:openssl
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup test test-fast lint typecheck demo demo-trace bench clean

setup: $(VENV)/.stamp node_modules/.stamp $(STUBS)/.stamp
	@scripts/ensure-debs.sh $(DEBS)

$(VENV)/.stamp: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The ESP32 and stdlib stubs the firmware is type-checked against (pyright reads them from here).
$(STUBS)/.stamp: Makefile
	rm -rf $(STUBS)
	$(BIN)/pip install -q --no-deps --target $(STUBS) \
	    "micropython-esp32-stubs==1.29.0.post1" "micropython-stdlib-stubs==1.29.0.post2"
	touch $@

lint: setup
	$(BIN)/ruff check host_tools tests bench

typecheck: setup
	pyright -p pyrightconfig.json

# Everything: lint, firmware type check, host + firmware tests (CPython and the MicroPython VM),
# mpy-cross compilation. pytest's exit code 5 (nothing collected) is a failure here.
test: setup lint typecheck
	$(BIN)/python -m pytest -q

# A small virtual store: boards deployed over their serial ports, shoppers, receipts vs truth.
demo: setup
	$(BIN)/shelfctl sim store --shelves 4 --gates 1 --shoppers 3 --seed 1

# A recorded shelf trace through the firmware detector, in CPython and in the VM.
demo-trace: setup
	$(BIN)/shelfctl trace replay traces/examples/example-01 --table --runtime both

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) node_modules $(STUBS) .pytest_cache .ruff_cache
