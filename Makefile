# Two commands matter: `make serve` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARCH ?= arm64
PYTHON_VERSION ?= 3.13
# The CDK CLI, pinned (it reads aws-cdk-lib 2.275's cloud assembly); fetched by npx on first use.
CDK_CLI_VERSION ?= 2.1148.1
CDK := npx --yes aws-cdk@$(CDK_CLI_VERSION)

.PHONY: setup redis serve test lint unit layer check-layer synth bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(BIN)/next-image serve --public-dir ./public --port 3000 --store filesystem

lint: setup
	$(BIN)/ruff check handler devtools tests infra layers bench
	$(BIN)/ruff format --check handler devtools tests infra layers bench
	$(BIN)/mypy

# The Redis store is tested against a real redis-server: Debian's package, installed if missing
# (as root, as on CI; elsewhere install it once yourself).
redis:
	command -v redis-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

unit: setup redis
	$(BIN)/pytest -q

test: lint unit

layer: setup
	$(BIN)/python -m layers.build_layer --arch $(ARCH) --python-version $(PYTHON_VERSION)

check-layer: setup
	$(BIN)/python -m layers.check_layer

synth: setup
	$(BIN)/python -m layers.build_layer --arch $(ARCH) --python-version $(PYTHON_VERSION) --if-stale
	$(CDK) synth --quiet -c arch=$(ARCH) -c pythonVersion=$(PYTHON_VERSION)

bench: setup
	$(BIN)/python bench/bench_miss.py
