# The two commands a new user needs:
#   make run    the embedded demo: no server needed
#   make test   provision PostgreSQL, MariaDB, Kafka and the schema registry, then run every test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := scripts/services/services.sh
STAMP := $(VENV)/.installed

# Container image and its tests (podman where no Docker engine runs: scripts/container):
#   make image            build the connector image from the Dockerfile
#   make container-test   run it against the services: tests/container
.PHONY: image container-test constraints test-latest run test services services-down services-status env venv lint typecheck check smoke bench-quick unit clean

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard cdc/*.c)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/cdc demo

services:
	bash $(SERVICES) up

services-down:
	bash $(SERVICES) down

services-status:
	bash $(SERVICES) status

env:
	@bash $(SERVICES) env

# Every test, unit and integration, against the real services provisioned above.
test: $(STAMP) services
	eval "$$(bash $(SERVICES) env)" && $(BIN)/pytest tests --ignore=tests/container $(PYTEST_ARGS)

image:
	bash scripts/container/image.sh

# The built image run for real (non-root, PID 1, WAL streaming, kill/stop, health, logs).
container-test: $(STAMP) services
	CDC_ENGINE=podman bash scripts/container/image.sh
	eval "$$(bash $(SERVICES) env)" && $(BIN)/pytest tests/container $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

# Build the wheel, install it into a fresh venv and run the CLI: catches a package left out of the wheel.
smoke: $(STAMP)
	rm -rf build dist /tmp/cdc-smoke-venv
	$(BIN)/python -m build -q --wheel --outdir dist . >/dev/null
	$(PYTHON) -m venv /tmp/cdc-smoke-venv
	/tmp/cdc-smoke-venv/bin/pip install -q dist/*.whl
	cd /tmp && /tmp/cdc-smoke-venv/bin/cdc --help >/dev/null && /tmp/cdc-smoke-venv/bin/cdc connectors list
	cd /tmp && /tmp/cdc-smoke-venv/bin/cdc migrations list | grep -q V1
	cd /tmp && /tmp/cdc-smoke-venv/bin/python -c "from cdc.migrations import DIALECTS, discover, migrations_root; assert 'site-packages' in str(migrations_root()); assert all(discover(d) for d in DIALECTS)"
	cd /tmp && rm -rf /tmp/cdc-smoke-demo && /tmp/cdc-smoke-venv/bin/cdc demo --dir /tmp/cdc-smoke-demo --seconds 3 >/dev/null
	/tmp/cdc-smoke-venv/bin/cdc tail /tmp/cdc-smoke-demo/topics --limit 1 | grep -q customers
	@echo "smoke: the wheel installs; cdc --help and the packaged demo run"

bench-quick: $(STAMP) services
	eval "$$(bash $(SERVICES) env)" && for b in benchmarks/bench_*.py; do $(BIN)/python $$b --quick || exit 1; done
	eval "$$(bash $(SERVICES) env)" && $(BIN)/python benchmarks/bench_outbox.py --quick --mode log
	eval "$$(bash $(SERVICES) env)" && $(BIN)/python benchmarks/bench_outbox.py --quick --mode log --db mysql
	eval "$$(bash $(SERVICES) env)" && $(BIN)/python benchmarks/bench_wal.py --quick --scenario small-txns --shaping
	eval "$$(bash $(SERVICES) env)" && $(BIN)/python benchmarks/bench_polling_initial_load.py --quick --source wal
	eval "$$(bash $(SERVICES) env)" && $(BIN)/python benchmarks/bench_sink.py --quick --target mysql
	eval "$$(bash $(SERVICES) env)" && $(BIN)/python benchmarks/bench_sink.py --quick --target sqlite

# Pin what the venv resolved (after a change to pyproject.toml's dependencies).
constraints:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.tmp && mv constraints.tmp constraints.txt

# The unit tests against the NEWEST versions pyproject.toml allows (no constraints), in a venv of
# their own: a new SQLAlchemy or confluent-kafka that breaks us shows up here first.
# The unit tests, and the integration tests at the driver/library boundary (the sink's column
# kinds after a restart, the MySQL and SQLite value contracts, unrepresentable values), against
# the newest versions pyproject allows: the next SQLAlchemy-2.1-style break shows here first.
LATEST_INTEGRATION := tests/integration/test_sink_restart_types.py tests/integration/test_mysql_polling_values.py \
	tests/integration/test_sqlite_type_matrix.py tests/integration/test_unrepresentable_values.py
test-latest: services
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	.venv-latest/bin/pip install -q --upgrade -e '.[dev]'
	.venv-latest/bin/pip freeze --exclude-editable | grep -i -E '^(sqlalchemy|psycopg|pymysql|mysql-replication|confluent-kafka|fastavro|pydantic|typer|apscheduler)==' | tr '\n' ' '; echo
	.venv-latest/bin/pytest -q tests/unit $(PYTEST_ARGS)
	eval "$$(bash $(SERVICES) env)" && .venv-latest/bin/pytest -q $(LATEST_INTEGRATION) $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache cdc/*.so
