# The two commands a newcomer needs:
#   make run    install into .venv and run the gateway on config/example.yaml (127.0.0.1:8080)
#   make test   install everything (Python deps, Docker engine, test images) and run every test
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= config/example.yaml

.PHONY: run test install test-env lint bench

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(VENV)/bin/mcp-gateway run --config $(CONFIG)

test-env:
	scripts/test-env

test: install test-env lint
	$(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check gateway sandbox admin bench tests
	$(VENV)/bin/mypy gateway sandbox admin

bench: install test-env
	scripts/bench-env
	bench/run
