# The two set-up commands: `make run` (server on the embedded database) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck services bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/graphgate serve --demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Real servers the tests start: fetched once from Maven Central, cached in ~/.m2 and .cache/.
services: $(BIN)/.installed
	$(BIN)/python scripts/neo4j_server.py download
	$(BIN)/python scripts/keycloak.py download
	$(BIN)/python -m tests.services.oidc_provider install

test: lint typecheck services
	$(BIN)/pytest -ra

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
