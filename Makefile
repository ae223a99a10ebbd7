# The two commands every new user needs: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test install lint format typecheck imports unit openapi check clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Installs the locked dependencies (the lock file is committed; --frozen never changes it).
install: $(UV)
	$(UV) sync --frozen --inexact

run: install
	$(BIN)/accrue serve --host $${ACCRUE_HOST:-127.0.0.1} --port $${ACCRUE_PORT:-8000}

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

openapi: install
	$(BIN)/python -m accrue.entrypoints.api.openapi_doc write docs/openapi.json

check: install
	$(BIN)/python -m accrue.entrypoints.api.openapi_doc check docs/openapi.json

test: install lint typecheck imports check
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .tools var .mypy_cache .ruff_cache .pytest_cache .hypothesis cdk.out
