# The README's two commands: `make run` (serve on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PostgreSQL server the tests create throwaway databases on (skipped if unreachable,
# except under CI=true, where an unreachable PostgreSQL fails the run).
MABAPI_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export MABAPI_TEST_POSTGRES_URL

# Tests run in parallel, one process per core (pytest-xdist); each worker has its own
# throwaway SQLite file and PostgreSQL database.
PYTEST_WORKERS ?= auto

.PHONY: run test test-fast test-pgbouncer lint typecheck pytest install install-dev migrations-check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/mabapi serve

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/pytest -n $(PYTEST_WORKERS)

# The inner loop: unit and API tests on SQLite, without the slow ones (~75 s on 2 cores).
test-fast: install-dev
	MABAPI_TEST_DATABASES=sqlite $(BIN)/pytest -n $(PYTEST_WORKERS) -m "not slow"

# The API's write and read paths with PostgreSQL behind PgBouncer in transaction mode
# (listening on MABAPI_TEST_PGBOUNCER_PORT, 6439: not the packaged default 6432, so a
# pgbouncer the package started is never mistaken for it; .ci/run starts one).
PGBOUNCER_TESTS = tests/db/test_transaction_pooler.py tests/metrics/test_metrics_api.py \
	tests/experiments/test_concurrency.py tests/assignments tests/webhooks/test_webhooks.py \
	tests/guardrails/test_guardrails_api.py tests/reports/test_segments_api.py \
	tests/db/test_read_snapshot.py tests/reports/test_one_state.py
test-pgbouncer: install-dev
	MABAPI_TEST_DATABASES=pgbouncer $(BIN)/pytest -n $(PYTEST_WORKERS) $(PGBOUNCER_TESTS)

# Models and migrations must not drift: autogenerate finds nothing to add.
migrations-check: install-dev
	@tmp=$$(mktemp -d) && MABAPI_DATABASE_URL=sqlite:///$$tmp/check.db $(BIN)/alembic upgrade head \
	  && MABAPI_DATABASE_URL=sqlite:///$$tmp/check.db $(BIN)/alembic check; rc=$$?; rm -rf $$tmp; exit $$rc

test: lint typecheck migrations-check pytest

bench: install-dev
	$(BIN)/python benchmarks/allocation.py
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
