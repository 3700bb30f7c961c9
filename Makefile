# Two entry points, both self-installing: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.install-stamp

.PHONY: install run test clean browser promtool bench wrk kafka

# Debian's Chromium and its WebDriver, for the dashboard's browser test (needs root or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; }

# Debian's Prometheus, for promtool: the suite checks and unit-tests the alert rules in deploy/.
promtool:
	@command -v promtool >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Apache Kafka's runtime jars from Maven Central (deploy/kafka/pom.xml), for the tests and
# `refit up --broker kafka`; the stamp keeps a second run from calling Maven again. The plugin is
# pinned: Maven 3.8.7's default maven-dependency-plugin is no longer served.
KAFKA_LIB   := .kafka/lib
KAFKA_STAMP := .kafka/.fetch-stamp
$(KAFKA_STAMP): deploy/kafka/pom.xml
	rm -rf $(KAFKA_LIB)
	mvn -B -q -f deploy/kafka/pom.xml org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIB)
	touch $@

kafka: $(KAFKA_STAMP)

# The embedded broker, the four services and the digits demo; Ctrl-C stops everything.
run: install
	$(VENV)/bin/refit up --demo

# The whole suite: unit and service tests; integration, end-to-end and chaos tests on Apache Kafka
# (a smaller set also on the embedded broker).
test: install browser promtool kafka
	$(VENV)/bin/pytest

# Debian's wrk, the load generator of the benchmarks, and the system Python's venv module (PyTriton's
# environment is built on /usr/bin/python3.11: bench/peer_envs.py).
wrk:
	@{ command -v wrk && /usr/bin/python3.11 -c 'import ensurepip'; } >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends wrk python3.11-venv; }

$(VENV)/.bench-stamp: pyproject.toml $(STAMP)
	$(VENV)/bin/pip install --quiet -e ".[test,bench]"
	touch $@

# refit inference against its FastAPI ceiling, the serving stacks users pick (each in an environment
# of its own under .bench/, pins in pyproject.toml) and Debian's nginx (docs/benchmarks.md).
bench: $(VENV)/.bench-stamp wrk kafka
	$(VENV)/bin/python bench/peer_envs.py
	$(VENV)/bin/python bench/inference_peers.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/many_models.py --models 100,1000
	$(VENV)/bin/python bench/sample_to_serving.py --waves 20
	$(VENV)/bin/python bench/ingest_throughput.py --broker kafka --rounds 5 --ingest-workers 0

clean:
	rm -rf $(VENV) .refit .kafka .bench test-artifacts
