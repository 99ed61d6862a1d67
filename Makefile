# ToteSys: `make run` runs the pipeline locally, `make test` checks everything. Both set themselves up.
PYTHON ?= python3
VENV := venv
BIN := $(VENV)/bin
STATE_DIR ?= .local
STAMP := $(VENV)/.installed-dev
RUNTIME_STAMP := $(VENV)/.installed-runtime

.DEFAULT_GOAL := help
.PHONY: help install-requirements install-dev-tools security-checks audit check-pep8-compliance \
	lint terraform-fmt run-pytest test run simulate bench psql stop clean

help:
	@echo "make run    run the pipeline once on embedded defaults (local PostgreSQL + emulated AWS)"
	@echo "make test   lint, security checks and the tests with coverage (what CI runs)"
	@echo "other: install-requirements install-dev-tools security-checks check-pep8-compliance lint"
	@echo "       run-pytest bench psql stop clean layer deploy destroy"

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

install-requirements: $(RUNTIME_STAMP)

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

lint: check-pep8-compliance terraform-fmt
	$(BIN)/bandit -q -r src -c pyproject.toml

run-pytest: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=90

test: lint security-checks run-pytest

run: $(STAMP)
	$(BIN)/totesys run --state-dir $(STATE_DIR)

bench: $(STAMP)
	$(BIN)/python -m bench.bench

simulate: $(STAMP)
	$(BIN)/totesys simulate --minutes 60 --state-dir $(STATE_DIR)

psql: $(STAMP)
	@$(BIN)/totesys psql --state-dir $(STATE_DIR)

stop: $(STAMP)
	$(BIN)/totesys stop --state-dir $(STATE_DIR)

clean:
	-@[ -x $(BIN)/totesys ] && $(BIN)/totesys stop --state-dir $(STATE_DIR) >/dev/null 2>&1 || true
	rm -rf $(STATE_DIR) build layers/python layers/*.zip
