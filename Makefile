# llm-failover: `make run` for the demo, `make test` for everything. Both install what they lack.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test bench setup build unit e2e clean

setup:
	@scripts/toolchain.sh setup

build: setup
	@scripts/toolchain.sh build

unit:
	cargo test --locked

e2e: build
	$(PYTHON) -m pytest tests/e2e -q

test: setup unit e2e

run: build
	$(PYTHON) scripts/demo.py

bench: build
	$(PYTHON) bench/run.py

clean:
	cargo clean
	rm -rf $(VENV)
