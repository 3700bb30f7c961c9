# Two entry points, both self-installing: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.install-stamp

.PHONY: install run test clean browser bench wrk

# Debian's Chromium and its WebDriver, for the dashboard's browser test (needs root or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The embedded broker, the four services and the digits demo; Ctrl-C stops everything.
run: install
	$(VENV)/bin/refit up --demo

# The whole suite: unit, service, integration and end-to-end tests on the real embedded broker.
test: install browser
	$(VENV)/bin/pytest

# Debian's wrk, the load generator of the benchmarks.
wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends wrk; }

$(VENV)/.bench-stamp: pyproject.toml $(STAMP)
	$(VENV)/bin/pip install --quiet -e ".[test,bench]"
	touch $@

# refit inference against its FastAPI ceiling, a predict_proba app and MLflow (docs/benchmarks.md).
bench: $(VENV)/.bench-stamp wrk
	$(VENV)/bin/python bench/inference_peers.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .refit test-artifacts
