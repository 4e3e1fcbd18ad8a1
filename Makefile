# Two commands do all the set-up on a fresh machine with python3 and make:
#   make demo   - create .venv, install the project, run the pipeline offline on the synthetic scene
#   make test   - install the dev extras too, run lint and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo

# Offline by design: no telemetry from the temporary Prefect API the flows start.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test lint format bench clean help

help:
	@echo "make demo   - install into $(VENV) and run the offline demo (outputs in $(OUT))"
	@echo "make test   - install dev extras and run lint + the whole test suite"
	@echo "make bench  - run the benchmarks under benchmarks/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m flows.demo --out $(OUT)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-dev
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf out .pytest_cache .ruff_cache

# A local Prefect server + the deepsolar process pool + every deployment + a worker, in one
# terminal (deepsolar/serve.py). One Ctrl-C or SIGTERM stops all of it within seconds (exit 130 /
# 143): the worker's flow runs, then the worker, then the server. UI: http://127.0.0.1:$(PORT)
# See docs/orchestration.md "Running with Prefect".
PORT ?= 4200
.PHONY: serve
serve: $(VENV)/.installed
	@exec $(BIN)/python -m deepsolar.cli serve --port $(PORT)
