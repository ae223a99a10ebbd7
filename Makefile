# The two commands every new user needs: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test install lint format typecheck imports unit openapi check clean
.PHONY: synth deploy cdk-bootstrap lambda-package infra-tools checkov-lock

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Installs the locked dependencies (the lock file is committed; --frozen never changes it).
install: $(UV)
	$(UV) sync --frozen --inexact --group infra

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

# The infrastructure tests synthesise the CDK app once and run cdk-nag, cfn-lint, checkov and
# asl-validator on it; here a missing validator fails instead of skipping.
test: install lint typecheck imports check infra-tools
	env -u PYTHONDONTWRITEBYTECODE ACCRUE_INFRA_TOOLS_REQUIRED=1 $(BIN)/pytest -q

# -- Benchmarks (docs/PERFORMANCE.md). `bench` runs them all; each feature adds its own target as
# a prerequisite of `bench`. wrk, the HTTP load generator, comes from Debian.
.PHONY: bench bench-deps bench-ledger bench-api bench-api-cost bench-writer bench-pipeline bench-payout bench-ingest \
	bench-webhooks bench-campaigns bench-lambda-init
bench: bench-ledger bench-api bench-api-cost bench-writer bench-pipeline bench-payout bench-ingest bench-webhooks \
	bench-campaigns bench-lambda-init

bench-deps:
	@command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)

bench-ledger: install
	$(BIN)/python bench/ledger_bench.py

bench-api: install bench-deps
	$(BIN)/python bench/api_bench.py

bench-api-cost: install
	$(BIN)/python bench/api_cost_bench.py

bench-writer: install
	$(BIN)/python bench/writer_bench.py

bench-pipeline: install
	$(BIN)/python bench/pipeline_bench.py

bench-payout: install
	$(BIN)/python bench/payout_bench.py

bench-ingest: install
	$(BIN)/python bench/ingest_bench.py

bench-webhooks: install
	$(BIN)/python bench/webhooks_bench.py

bench-campaigns: install
	$(BIN)/python bench/campaigns_bench.py

bench-lambda-init: install
	$(BIN)/python bench/lambda_init_bench.py

clean:
	rm -rf $(VENV) .tools var .mypy_cache .ruff_cache .pytest_cache .hypothesis cdk.out
	rm -rf $(CHECKOV_VENV) infra/node_modules build

# -- AWS: the CDK app (infra/), its pinned validators, the Lambda package, deployment ------------
# See README "Deploy to AWS" and docs/OPERATIONS.md. Nothing here needs AWS credentials except
# `deploy` and `cdk-bootstrap`.
ENV_SUFFIX ?= dev
CHECKOV_VENV := .checkov-venv
INFRA_NODE := infra/node_modules/.package-lock.json
LAMBDA_DIR := build/lambda
CDK := infra/node_modules/.bin/cdk
CDK_APP := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python infra/app.py
# jsii (aws-cdk-lib runs on Node) prints a banner on Node 20 otherwise.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 18,20
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION ?= 1

# checkov pins an old boto3, so it gets its own venv, from a hash-locked requirements file.
$(CHECKOV_VENV)/bin/checkov: infra/checkov-requirements.txt | $(UV)
	rm -rf $(CHECKOV_VENV)
	$(UV) venv --quiet --python $(PYTHON) $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes -r infra/checkov-requirements.txt
	touch $@

# asl-validator (make test) and the aws-cdk CLI (make deploy), pinned by infra/package-lock.json.
$(INFRA_NODE): infra/package.json infra/package-lock.json
	npm ci --prefix infra --no-audit --no-fund --loglevel=error
	touch $@

infra-tools: $(CHECKOV_VENV)/bin/checkov $(INFRA_NODE)

# Re-pin checkov (edit infra/checkov-requirements.in first).
checkov-lock: $(UV)
	$(UV) pip compile --quiet --universal --generate-hashes --python-version 3.11 \
	  --custom-compile-command "make checkov-lock" infra/checkov-requirements.in -o infra/checkov-requirements.txt

# The CloudFormation template, offline: cdk.out/Accrue-$(ENV_SUFFIX).template.json (fails on any
# unacknowledged cdk-nag finding).
synth: install
	$(CDK_APP) --outdir cdk.out -c env_suffix=$(ENV_SUFFIX)

# The Lambda code with its runtime dependencies (main + `aws` extra, from uv.lock, hash-checked)
# for Python 3.12 on arm64; never the dev or infra groups.
lambda-package: install
	rm -rf $(LAMBDA_DIR) && mkdir -p $(LAMBDA_DIR)
	$(UV) export --quiet --frozen --no-dev --extra aws --no-emit-project --no-header \
	  --format requirements-txt -o build/lambda-requirements.txt
	.tools/bin/pip install --quiet --disable-pip-version-check --no-compile \
	  --platform manylinux2014_aarch64 --implementation cp --python-version 3.12 --only-binary=:all: \
	  --target $(LAMBDA_DIR) -r build/lambda-requirements.txt
	rm -rf $(LAMBDA_DIR)/bin
	cp -r src/accrue $(LAMBDA_DIR)/accrue
	find $(LAMBDA_DIR) -name __pycache__ -prune -exec rm -rf {} +
	@du -sh $(LAMBDA_DIR)

# Once per account and region: the CDK bootstrap stack (assets bucket, deployment roles).
cdk-bootstrap: install $(INFRA_NODE)
	$(CDK) bootstrap --app "$(CDK_APP)" -c env_suffix=$(ENV_SUFFIX)

# A real deployment (needs AWS credentials): packages the code, then deploys with the pinned CLI.
# Extra CLI flags: make deploy ENV_SUFFIX=prod CDK_ARGS="-c alarm_email=ops@example.com"
deploy: install lambda-package $(INFRA_NODE)
	$(CDK) deploy --app "$(CDK_APP)" --output cdk.out --require-approval broadening \
	  -c env_suffix=$(ENV_SUFFIX) -c lambda_asset=$(LAMBDA_DIR) $(CDK_ARGS)
