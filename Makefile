# The README's commands. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint fmt bench clean node

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/huddle migrate
	$(BIN)/huddle serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

node:
	@if [ -f tests/interop/package.json ]; then cd tests/interop && npm ci --no-audit --no-fund --loglevel=error; fi

test: install lint node
	$(BIN)/pytest -q

bench: install
	$(BIN)/huddle bench

clean:
	rm -rf $(VENV) data .mypy_cache .pytest_cache .ruff_cache
