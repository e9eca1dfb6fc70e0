# Every target bootstraps .venv from nothing, so a fresh clone needs only Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo web-demo test bench lint typecheck clean services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The chat page with thumbs (fake LLM, no key, no network): http://127.0.0.1:8000
web-demo: $(STAMP)
	$(BIN)/python examples/web_chat/app.py

# Servers the tests run for real: Redis, Prometheus and Chromium from Debian's packages if missing;
# Phoenix and MLflow from PyPI into their own cached virtual environments (not .venv).
services:
	bash scripts/redis-server.sh >/dev/null
	bash scripts/prometheus.sh >/dev/null
	bash scripts/chromium.sh >/dev/null
	bash scripts/phoenix.sh >/dev/null
	bash scripts/mlflow.sh >/dev/null

test: $(STAMP) services
	$(BIN)/ruff check brixo_otel tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/signals.py
	$(BIN)/python benchmarks/index.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
