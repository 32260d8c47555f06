# Two commands on a fresh machine with Python 3.11 and make:
#   make demo   set up .venv, generate the demo catalog, run workflows/demo.yaml
#   make test   set up .venv, run the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-toa test test-slow test-all bench bench-nightly bench-rates bench-catalog lint install clean lock

install: $(STAMP)

# the tested set: pip and the build backend from build-constraints.txt, the rest from constraints.txt
$(STAMP): pyproject.toml constraints.txt build-constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c build-constraints.txt --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt --build-constraint build-constraints.txt \
		-e '.[test,bench,dev]'
	@touch $(STAMP)

catalogs/demo/catalog.json: | $(STAMP)
	$(BIN)/aquila demo-catalog catalogs/demo --preset demo

demo: $(STAMP) catalogs/demo/catalog.json
	$(BIN)/aquila run workflows/demo.yaml

catalogs/demo-toa/catalog.json: | $(STAMP)
	$(BIN)/aquila demo-catalog catalogs/demo-toa --preset demo --providers west,centre

demo-toa: $(STAMP) catalogs/demo-toa/catalog.json
	$(BIN)/aquila run workflows/demo-toa.yaml

# tests run in TEST_PROCESSES processes (pytest-xdist), fewer on a machine with fewer cores;
# TEST_PROCESSES=1 runs them in this process, one after another. --dist worksteal: each process
# starts with half the tests, file by file (module fixtures made once), and takes from the
# other's queue when its own runs out; on 2 cores, alternating with the default (load): the
# default suite 430 / 450 s against 490 / 481 s, the slow tests 152 s against 180 s
TEST_PROCESSES ?= 2
XDIST := -n auto --maxprocesses=$(TEST_PROCESSES) --dist worksteal

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q $(XDIST)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q $(XDIST)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

bench: $(STAMP)
	$(BIN)/python benchmarks/peers.py

bench-nightly: $(STAMP)  # local disk (median+latest, then mosaics updated in place), then remote
	$(BIN)/python benchmarks/nightly.py
	$(BIN)/python benchmarks/nightly.py --mosaics latest,earliest,min,max
	$(BIN)/python benchmarks/nightly.py --http --latency-ms 20

bench-rates: $(STAMP)  # per-core rates for the cost model (--write updates pipeline/plan/rates.py)
	$(BIN)/python benchmarks/rates.py

bench-catalog: $(STAMP)  # stac-geoparquet: 10^6 items read + normalised, then a 1 % search
	$(BIN)/python benchmarks/geoparquet.py && $(BIN)/python benchmarks/geoparquet.py --search

lock: $(STAMP)  # re-pin the tested set after changing dependencies (then run make test); pip and the build backend are pinned by hand in build-constraints.txt
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^aquila' > constraints.txt

lint: $(STAMP)  # what CI runs first (.ci/run): style, types (strict for kernels, plan, spec), layers
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/mypy pipeline
	$(BIN)/lint-imports

clean:
	rm -rf out benchmarks/_work .pytest_cache .hypothesis
