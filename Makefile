# APOS developer commands. Every target creates .venv first if it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The routing hot path's numeric loops, compiled to C with mypyc (docs/routing.md, "Speed").
# The same sources run as plain Python when they are not compiled (make pure).
ACCEL_SRC   := src/apos/core/routing/learner.py src/apos/core/routing/draws.py \
               src/apos/core/breaker.py src/apos/core/stats/decayed_beta.py src/apos/core/engine.py
ACCEL_STAMP := $(VENV)/.accel

.PHONY: run serve test fuzz lint typecheck check bench bench-ingest bench-route bench-sim bench-detect accel pure clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(ACCEL_STAMP): $(STAMP) $(ACCEL_SRC)
	cd src && ../$(BIN)/mypyc $(ACCEL_SRC:src/%=%) > ../$(VENV)/accel.log 2>&1 \
	  || { tail -20 ../$(VENV)/accel.log; exit 1; }
	rm -rf src/build
	touch $(ACCEL_STAMP)

## Compile the hot-path modules (done by every target below that runs code).
accel: $(ACCEL_STAMP)

## Drop the compiled modules: everything runs as plain Python (make accel brings them back).
pure:
	find src -name "*.so" -delete; rm -f $(ACCEL_STAMP)

## The main job: the service on embedded defaults (SQLite, in-process bus), driven live by
## the built-in demo scenario; the API stays up afterwards.
run: $(ACCEL_STAMP)
	$(BIN)/apos demo

## The service alone, on embedded defaults (or APOS_* settings).
serve: $(ACCEL_STAMP)
	$(BIN)/apos serve


## The whole test suite (real PostgreSQL/Redis tests skip locally if those are down; CI fails).
test: $(ACCEL_STAMP)
	$(BIN)/pytest

## Schemathesis against the running service (uvicorn, SQLite and the local PostgreSQL, an
## admin key and a merchant-scoped one), many more examples per operation than `make test`.
FUZZ_EXAMPLES ?= 200
fuzz: $(ACCEL_STAMP)
	APOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest --timeout 3600 tests/service/test_openapi_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/apos/core

check: lint typecheck test

## Benchmarks (need the local PostgreSQL and Redis); figures go to docs/benchmarks.md.
bench-ingest: $(ACCEL_STAMP)
	$(BIN)/python -m bench.ingest

bench-route: $(ACCEL_STAMP)
	$(BIN)/python -m bench.route

bench-sim: $(ACCEL_STAMP)
	$(BIN)/python -m apos.sim.bench --strict

## Anomaly detection on the labelled detect_* scenarios (no database needed).
bench-detect: $(ACCEL_STAMP)
	$(BIN)/python -m apos.sim.detect_bench --strict

bench: bench-ingest bench-route bench-sim bench-detect

clean:
	rm -rf $(VENV) src/build src/*__mypyc*.so src/apos/core/routing/*.so .pytest_cache .mypy_cache .ruff_cache apos.db apos.db-*
