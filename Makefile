# Two commands on a fresh machine: `make run` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
export PORT

.DEFAULT_GOAL := help
.PHONY: help run test lint browser cluster upgrade clean bench bench-scale bench-profile bench-import bench-instructions fuzz

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: $(VENV)/.runtime ## set up, migrate the schema to head, serve with gunicorn on http://127.0.0.1:$(PORT)
	$(BIN)/flask --app wsgi db upgrade
	exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(VENV)/.dev ## set up and run the tests (PostgreSQL too when TEST_DATABASE_URL is set)
	$(BIN)/pytest $(PYTEST_ARGS)

fuzz: $(VENV)/.dev ## a long run of the model-based API fuzzer (FUZZ_EXAMPLES, FUZZ_STEPS; TEST_DATABASE_URL for PostgreSQL)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} FUZZ_STEPS=$${FUZZ_STEPS:-50} $(BIN)/pytest -q tests/test_state_machine.py $(PYTEST_ARGS)

lint: $(VENV)/.dev ## hadolint the Dockerfile, ruff check and format --check, mypy on webapp/
	$(BIN)/hadolint Dockerfile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

browser: ## install Debian's Chromium for the browser tests (as root; nothing to do when it is there)
	@test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

cluster: $(VENV)/.runtime ## nginx on PORT, two instances, PgBouncer, a primary and a replica (throwaway; Ctrl-C ends it)
	@{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null && { command -v pgbouncer || test -x /usr/sbin/pgbouncer; } >/dev/null \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx pgbouncer; }
	exec $(BIN)/python deploy/cluster.py

upgrade: $(VENV)/.runtime ## migrate the schema to head
	$(BIN)/flask --app wsgi db upgrade

bench: $(VENV)/.bench ## the app beside a Flask-SQLAlchemy peer and a bare-driver floor, PostgreSQL and SQLite
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-scale: $(VENV)/.bench ## get-by-id, deep pages and search at 10k and 1M users
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

bench-profile: $(VENV)/.bench ## where the app's time goes on get-by-id and create (pyinstrument)
	$(BIN)/python bench/hotpath.py $(BENCH_ARGS)

bench-instructions: $(VENV)/.bench ## instructions per request of app, peer and floor, counted by callgrind (noise-free)
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	$(BIN)/python bench/instructions.py $(BENCH_ARGS)

bench-import: $(VENV)/.runtime ## import 100k rows on PostgreSQL beside COPY and a naive loop; peak memory on 1M
	$(BIN)/python bench/import_bench.py $(BENCH_ARGS)

clean: ## remove the virtual environment and what tests and tools leave behind (not instance/, your data)
	rm -rf $(VENV) .pytest_cache .hypothesis .schemathesis .mypy_cache .ruff_cache test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	touch $@

$(VENV)/.runtime: requirements.txt $(VENV)/.python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@
	touch $(VENV)/.runtime

# wrk drives the benchmarks when it can be installed; without it they fall back
# to a Python client (slower, so it measures less precisely).
$(VENV)/.bench: bench/requirements.txt requirements.txt $(VENV)/.python
	$(BIN)/pip install --quiet -r bench/requirements.txt
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
		|| echo "wrk could not be installed: the benchmarks will use their Python client"
	touch $@
