# Two commands for users: `make run` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv services services-down services-status run ws test test-unit test-unit-py313 test-chaos lint asyncapi asyncapi-check bench bench-smoke bench-ads clean

help:
	@echo "make run             install, start Kafka + FerretDB (unless configured), run the worker"
	@echo "make test            install, start the servers, run the whole test suite"
	@echo "make services        start the local Kafka broker and FerretDB store"
	@echo "                     (KAFKA_BROKERS=3 make services: a three-broker cluster instead)"
	@echo "make services-status say whether each server (each node) answers"
	@echo "make services-down   stop them (every node)"
	@echo "make test-chaos      the chaos suite: faults on a three-broker cluster it starts itself"
	@echo "make ws              run the live (WebSocket) notifier (needs WS_TOKEN_SECRET)"
	@echo "make lint            ruff + mypy"
	@echo "make asyncapi        regenerate asyncapi.yaml from the code"
	@echo "make bench           the worker against a hand-written aiokafka loop: emails/s, latency, RSS, CPU;"
	@echo "                     then codes first: OTP latency behind 10,000 queued welcomes"
	@echo "make bench-ads       500 ad jobs within OpenAI's rate limits: the model budget against none (~20 min)"

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	@echo "==> creating the virtualenv in $(VENV) with the pinned dependencies"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --progress-bar off -r requirements.lock -r requirements-dev.lock
	@touch $(STAMP)

venv: $(STAMP)

services: venv
	@bash scripts/services.sh up

services-down:
	@bash scripts/services.sh down

services-status: venv
	@bash scripts/services.sh status

run: venv services
	@echo "==> starting the worker: faststream run streams.app:app"
	$(BIN)/faststream run streams.app:app

ws: venv
	$(BIN)/python -m live

test: venv services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

# Its own cluster, FerretDB and ports (tests/chaos/conftest.py); `make test` leaves it out.
test-chaos: venv
	$(BIN)/python -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

# The unit tests on Python 3.13 in a throwaway venv under /tmp (says so and passes if 3.13 is missing).
test-unit-py313:
	@bash scripts/test-py313.sh $(PYTEST_ARGS)

# PRIORITY_ARGS go to the priority run (its options differ from the throughput run's).
bench: venv services
	$(BIN)/python -m benchmarks.throughput $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.priority $(PRIORITY_ARGS)

bench-smoke: venv services
	$(BIN)/python -m benchmarks.throughput --smoke $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.priority --smoke $(PRIORITY_ARGS)

# Not in `bench`: OpenAI's limits make it last ~20 minutes, mostly waiting.
bench-ads: venv services
	$(BIN)/python -m benchmarks.ad_budget $(ADS_ARGS)

lint: venv
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/mypy

asyncapi: venv
	$(BIN)/faststream docs gen --yaml streams.app:app -o asyncapi.yaml

asyncapi-check: venv
	@tmp=$$(mktemp); $(BIN)/faststream docs gen --yaml streams.app:app -o $$tmp >/dev/null && \
	  if cmp -s $$tmp asyncapi.yaml; then echo "asyncapi.yaml is up to date"; rm -f $$tmp; \
	  else diff -u asyncapi.yaml $$tmp | head -40; rm -f $$tmp; \
	       echo "asyncapi.yaml differs from the code: run 'make asyncapi' and commit it"; exit 1; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache outbox
