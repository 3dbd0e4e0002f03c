# Two commands matter: `make serve` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARCH ?= arm64
PYTHON_VERSION ?= 3.13

.PHONY: setup serve test lint unit layer check-layer synth bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(BIN)/next-image serve --public-dir ./public --port 3000 --store filesystem

lint: setup
	$(BIN)/ruff check handler tests infra layers bench
	$(BIN)/ruff format --check handler tests infra layers bench
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: lint unit

layer: setup
	$(BIN)/python layers/build_layer.py --arch $(ARCH) --python-version $(PYTHON_VERSION)

check-layer: setup
	$(BIN)/python layers/check_layer.py

synth: setup
	$(BIN)/python infra/synth.py

bench: setup
	$(BIN)/python bench/bench_miss.py
