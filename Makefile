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
# terminal. Ctrl-C stops the worker (SIGTERM: it ignores a lone SIGINT), then the server, which
# runs in its own session so that it outlives the worker's shutdown. UI: http://127.0.0.1:$(PORT)
# See docs/orchestration.md "Running with Prefect".
PORT ?= 4200
.PHONY: serve
serve: $(VENV)/.installed
	@export PREFECT_API_URL=http://127.0.0.1:$(PORT)/api; \
	$(BIN)/python -c "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])" \
		$(BIN)/prefect server start --host 127.0.0.1 --port $(PORT) & server=$$!; \
	worker=; trap 'kill $$server 2>/dev/null; wait $$server' EXIT; \
	trap '[ -n "$$worker" ] && kill -TERM $$worker 2>/dev/null && wait $$worker; exit 130' INT TERM; \
	until $(BIN)/python -c "import urllib.request as u; u.urlopen('$$PREFECT_API_URL/health', timeout=2)" 2>/dev/null; do \
		kill -0 $$server 2>/dev/null || exit 1; sleep 1; done; \
	$(BIN)/prefect work-pool inspect deepsolar >/dev/null 2>&1 || \
		$(BIN)/prefect work-pool create deepsolar --type process; \
	$(BIN)/prefect --no-prompt deploy --all || exit 1; \
	$(BIN)/prefect worker start --pool deepsolar --type process & worker=$$!; \
	wait $$worker
