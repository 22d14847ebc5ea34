# The README's commands. Each does its own set-up on a fresh machine: a .venv with the
# packages, Debian tools the tests use (kcat, the PostgreSQL server), and (through
# `pipeline stack up` or the test fixtures) Kafka and Elasticsearch fetched from Maven Central.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
# The project's bytecode, written ahead: tests, the demo and benchmarks start many `pipeline`
# processes, and where PYTHONDONTWRITEBYTECODE is set each one compiled every module it imports
# again (0.4 s of CPU per start measured; compileall only redoes what changed).
COMPILE := $(BIN)/python -m compileall -q pipeline producers consumers bench > /dev/null
# The PostgreSQL server of the stack: Debian keeps its programs off PATH.
POSTGRES_SERVER := '/usr/lib/postgresql/*/bin/postgres=postgresql'

.PHONY: help venv demo test test-unit lint bench stack-up stack-down stack-status clean

help:
	@echo "make demo        start the stack, apply topics, send events and read them back"
	@echo "make test        the whole test suite (unit, integration, chaos) on the real stack"
	@echo "make test-unit   only the unit tests (no network)"
	@echo "make lint        ruff (check, format), mypy strict and the import contracts of the layout"
	@echo "make bench       the benchmarks, each against its baseline (bench/results/latest.md);"
	@echo "                 QUICK=1: the quick profile (small sizes, 3 rounds; 4-5 minutes)"
	@echo "make stack-up | stack-status | stack-down"

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

venv: $(INSTALLED)

demo: $(INSTALLED)
	scripts/ensure-debian-packages.sh $(POSTGRES_SERVER)
	$(COMPILE)
	$(BIN)/pipeline demo

test: $(INSTALLED)
	scripts/ensure-debian-packages.sh kcat=kcat $(POSTGRES_SERVER)
	$(COMPILE)
	scripts/test-lanes.sh $(PYTEST_ARGS)

test-unit: $(INSTALLED)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Every benchmark of bench/ (bench/suite): bench/results/latest.{json,md}, the charts and the
# results section of docs/benchmarks.md. QUICK=1: the quick profile (4-5 minutes).
bench: $(INSTALLED)
	scripts/ensure-debian-packages.sh kcat=kcat $(POSTGRES_SERVER)
	$(BIN)/pipeline stack up
	$(COMPILE)
	$(BIN)/python -m bench.suite $(if $(filter 1 yes true,$(QUICK)),--quick)

stack-up: $(INSTALLED)
	scripts/ensure-debian-packages.sh $(POSTGRES_SERVER)
	$(BIN)/pipeline stack up

stack-status: $(INSTALLED)
	$(BIN)/pipeline stack status

stack-down: $(INSTALLED)
	$(BIN)/pipeline stack down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
