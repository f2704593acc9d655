# The README's commands. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint fmt bench clean node web docs-assets browser-deps nginx-deps

# The web client (src/huddle/web) takes the official socket.io-client browser
# bundle from npm, pinned by its committed lock file, into vendor/ (git-ignored).
WEB := src/huddle/web
WEB_BUNDLE := $(WEB)/vendor/socket.io.min.js
BROWSER := tests/browser
BROWSER_STAMP := $(BROWSER)/node_modules/.installed
CHROMIUM := /usr/bin/chromium

install: $(STAMP) web docs-assets

# Not -q: on a fresh machine this takes a minute or two, and pip's own lines
# (Collecting…, Downloading… with its progress bar, Installing…) show it moving.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Huddle and its Python packages into $(VENV) (a minute or two the first time)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
	@touch $(STAMP)

# Redone only when the lock file changes. Without npm: a warning, and the page
# runs without live updates (it says so).
web: $(WEB_BUNDLE)

$(WEB_BUNDLE): $(WEB)/package.json $(WEB)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		set -e; cd $(WEB); \
		npm ci --no-audit --no-fund --loglevel=error; \
		mkdir -p vendor; \
		cp node_modules/socket.io-client/dist/socket.io.min.js \
		   node_modules/socket.io-client/dist/socket.io.min.js.map vendor/; \
		echo "web client: socket.io-client $$(node -p 'require("socket.io-client/package.json").version') -> $(WEB_BUNDLE)"; \
	else \
		echo "warning: npm (Node.js) not found: the web client's socket.io-client bundle is not installed; the page works without live updates until Node.js is installed and 'make install' is run again" >&2; \
	fi

# Swagger UI for /docs, served by Huddle itself (no CDN: /docs works offline), from
# npm's swagger-ui-dist pinned by its committed lock file, into vendor/ (git-ignored).
# --ignore-scripts: swagger-ui-dist's analytics dependency would phone home.
DOCS := src/huddle/api/docs
DOCS_BUNDLE := $(DOCS)/vendor/swagger-ui-bundle.js

docs-assets: $(DOCS_BUNDLE)

$(DOCS_BUNDLE): $(DOCS)/package.json $(DOCS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		set -e; cd $(DOCS); \
		npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; \
		mkdir -p vendor; \
		cp node_modules/swagger-ui-dist/swagger-ui-bundle.js \
		   node_modules/swagger-ui-dist/swagger-ui.css \
		   node_modules/swagger-ui-dist/favicon-32x32.png vendor/; \
		echo "api docs: swagger-ui-dist $$(node -p 'require("swagger-ui-dist/package.json").version') -> $(DOCS)/vendor/"; \
	else \
		echo "warning: npm (Node.js) not found: /docs has no Swagger UI until Node.js is installed and 'make install' is run again (/openapi.json works)" >&2; \
	fi

# `huddle serve` brings its SQLite database to the latest migration itself.
run: install
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

# The browser test (tests/browser): Debian's chromium, installed through apt as
# root when missing, and playwright-core from the committed lock file (no browser
# download). Where neither can be had the test skips, or fails under
# HUDDLE_REQUIRE_SERVICES=1.
browser-deps: $(BROWSER_STAMP)
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			set -e; apt-get update -qq; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
			echo "browser test: installed $$($(CHROMIUM) --version 2>/dev/null)"; \
		else \
			echo "warning: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get): the browser test will skip" >&2; \
		fi; \
	fi

# The nginx test (tests/cluster/test_nginx.py): Debian's nginx, installed through
# apt as root when missing (only the binary is used: the test runs its own
# nginx process on a free port, with its own pid and log files). Where it cannot be
# had the test skips, or fails under HUDDLE_REQUIRE_SERVICES=1.
NGINX := /usr/sbin/nginx

nginx-deps:
	@if [ ! -x $(NGINX) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			set -e; apt-get update -qq; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null; \
			echo "nginx test: installed $$($(NGINX) -v 2>&1)"; \
		else \
			echo "warning: $(NGINX) is missing and cannot be installed here (needs root and apt-get): the nginx test will skip" >&2; \
		fi; \
	fi

$(BROWSER_STAMP): $(BROWSER)/package.json $(BROWSER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		set -e; cd $(BROWSER); npm ci --no-audit --no-fund --loglevel=error; touch node_modules/.installed; \
	else \
		echo "warning: npm (Node.js) not found: the browser test will skip" >&2; \
	fi

# The whole suite with the accel modules on (ACCEL=auto, as shipped), then the
# behaviour suites again on the libraries' own public paths (ACCEL=off): the
# stock path is a product too. Tests run in TEST_JOBS processes, a file each.
# The deployment scenarios (faults injected under a split deployment, nginx in
# front) run once, on the shipped path: what they test is processes, proxies and
# outages, which the accel modules do not touch, and they are the longest files.
TEST_JOBS ?= 4
STOCK_SUITES := tests/api tests/gateway tests/cluster tests/interop \
	--ignore=tests/cluster/test_fault_matrix.py --ignore=tests/cluster/test_nginx.py

test: install lint node browser-deps nginx-deps
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile
	ACCEL=off $(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile $(STOCK_SUITES)

bench: install
	$(BIN)/huddle bench

clean:
	rm -rf $(VENV) data .mypy_cache .pytest_cache .ruff_cache $(WEB)/node_modules $(WEB)/vendor \
		$(DOCS)/node_modules $(DOCS)/vendor
