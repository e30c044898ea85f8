# Everything a developer or CI needs, from a fresh clone. The virtualenv is (re)built
# whenever pyproject.toml changes, so `make test` on a new machine does all the set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install up demo lint format test bench clean

help:
	@echo "make up     - install into $(VENV) and start the control plane with the demo pack"
	@echo "make demo   - install into $(VENV) and run a 60-second tour of the Safety Kernel"
	@echo "make test   - lint (ruff + mypy), then the whole test suite"
	@echo "make lint   - ruff and mypy only"
	@echo "make bench  - policy, submit, pipeline (embedded and distributed), audit and hot-swap benchmarks"
	@echo "make format - apply ruff's formatter and safe fixes"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

up: $(STAMP)
	$(BIN)/cordum up

demo: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/tour.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/policy_eval.py
	$(BIN)/python bench/submit_http.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pipeline.py --distributed
	$(BIN)/python bench/audit_verify.py
	$(BIN)/python bench/policy_hotswap.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
