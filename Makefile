# Two commands matter: `make serve` and `make test`. Both set up .venv on first use: serve with
# the runtime dependencies only, test with the development tools as well.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
ARCH ?= arm64
PYTHON_VERSION ?= 3.13
# The CDK CLI, pinned (it reads aws-cdk-lib 2.275's cloud assembly); fetched by npx on first use.
CDK_CLI_VERSION ?= 2.1148.1
CDK := npx --yes aws-cdk@$(CDK_CLI_VERSION)

.PHONY: setup redis serve test lint unit e2e chromium layer check-layer check-layer-arm64 synth bench dist bench-budgets

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $(RUNTIME)

# The dev tools, and the construct (infra/, next-image-cdk) installed editable beside the CLI.
$(STAMP): pyproject.toml infra/pyproject.toml $(RUNTIME)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]" -e ./infra
	touch $(STAMP)

setup: $(STAMP)

serve: $(RUNTIME)
	$(BIN)/next-image serve --public-dir ./public --port 3000 --store filesystem

lint: setup
	$(BIN)/ruff check handler devtools tests infra layers bench release
	$(BIN)/ruff format --check handler devtools tests infra layers bench release
	$(BIN)/mypy

# The Redis store is tested against a real redis-server: Debian's package, installed if missing
# (as root, as on CI; elsewhere install it once yourself).
redis:
	command -v redis-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

# pyproject's addopts leave tests/e2e out of a plain pytest run: make e2e runs it.
unit: setup redis
	$(BIN)/pytest -q

# Headless Chromium for make e2e: Debian's package (driven by Playwright's Python package from
# the dev extras; no browser download), installed if missing, as root as on CI.
chromium:
	command -v chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# A real Next.js app (npm ci, next build) behind next-image local-cdn, loaded in Chromium.
e2e: setup chromium
	$(BIN)/pytest -q tests/e2e

test: lint unit

layer: setup
	$(BIN)/python -m layers.build_layer --arch $(ARCH) --python-version $(PYTHON_VERSION)

check-layer: setup
	$(BIN)/python -m layers.check_layer

# The arm64 layers and handler/ run in Debian's aarch64 python$(PYTHON_VERSION) under qemu-user
# (Debian's package, installed if missing, as root as on CI) against moto's S3; the Python sysroot
# is cached in ~/.cache/next-image/arm64-sysroot.
check-layer-arm64: setup
	command -v qemu-aarch64-static >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static)
	$(BIN)/python -m layers.check_layer_arm64 --python-version $(PYTHON_VERSION)

# The template in cdk.out/, e.g. `make synth APP_ORIGIN=app.example.com`. The construct builds
# the layers into the user cache (~/.cache/next-image-cdk) when missing.
synth: setup
	$(CDK) synth --quiet -c arch=$(ARCH) -c pythonVersion=$(PYTHON_VERSION) \
		$(if $(APP_ORIGIN),-c appOrigin=$(APP_ORIGIN))

# Both wheels and sdists, and the layer zips for arm64 and x86_64 x Python 3.12 and 3.13, with
# SHA256SUMS, into dist/; the same commit gives the same bytes.
dist: setup
	$(BIN)/python -m release.build --out-dir dist

bench: setup
	$(BIN)/python bench/miss_cost.py

# The time budgets the tests no longer assert (import, fast 503s, hits in a burst, bombs...),
# measured on this machine and reported beside them.
bench-budgets: setup
	$(BIN)/python bench/budgets.py
