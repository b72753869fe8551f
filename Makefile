# APOS developer commands. Every target creates .venv first if it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run serve test lint typecheck check bench bench-ingest bench-route bench-sim clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: the service on embedded defaults (SQLite, in-process bus), driven live by
## the built-in demo scenario; the API stays up afterwards.
run: $(STAMP)
	$(BIN)/apos demo

## The service alone, on embedded defaults (or APOS_* settings).
serve: $(STAMP)
	$(BIN)/apos serve


## The whole test suite (real PostgreSQL/Redis tests skip locally if those are down; CI fails).
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/apos/core

check: lint typecheck test

## Benchmarks (need the local PostgreSQL and Redis); figures go to docs/benchmarks.md.
bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

bench-route: $(STAMP)
	$(BIN)/python -m bench.route

bench-sim: $(STAMP)
	$(BIN)/python -m apos.sim.bench --strict

bench: bench-ingest bench-route bench-sim

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache apos.db apos.db-*
