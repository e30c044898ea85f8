# Everything a developer or CI needs, from a fresh clone. The virtualenv is (re)built
# whenever pyproject.toml changes, so `make test` on a new machine does all the set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
CHROMIUM ?= /usr/bin/chromium

.PHONY: help install browser up demo lint format test bench clean

help:
	@echo "make up     - install into $(VENV) and start the control plane with the demo pack"
	@echo "make demo   - install into $(VENV) and run a 60-second tour of the Safety Kernel"
	@echo "make test   - lint (ruff + mypy), then the whole test suite"
	@echo "make lint   - ruff and mypy only"
	@echo "make bench  - policy, submit, pipeline (embedded and distributed), audit, hot-swap and dashboard benchmarks"
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

# The dashboard's browser tests drive Debian's Chromium (Playwright's own download is not
# used). Installed here when missing and this is a Debian machine run as root; otherwise
# those tests skip with a reason (and fail under CI=true).
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "no Chromium at $(CHROMIUM): the dashboard's browser tests will skip"

test: lint browser
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/policy_eval.py
	$(BIN)/python bench/submit_http.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pipeline.py --distributed
	$(BIN)/python bench/audit_verify.py
	$(BIN)/python bench/policy_hotswap.py
	$(BIN)/python bench/dashboard_pages.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
