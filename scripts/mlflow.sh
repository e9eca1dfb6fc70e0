#!/usr/bin/env bash
# Make a real MLflow tracking server available for tests/test_exporter_mlflow.py.
#
# The MLflow exporter is only proven by the server itself: the `tr-` trace id prefix, the 500 it
# answers to a repeated assessment id, and how it types a span are facts of the real server, not
# of a fake. MLflow is installed from PyPI into its own cached virtual environment (about 850 MB
# the first time), never into the project's .venv: its dependency tree is large and would pin the
# library's own. Idempotent and fast when the environment is already there. Prints the path of the
# `mlflow` executable on success; exits non-zero when it cannot be installed.
#
#   MLFLOW_VERSION    the mlflow requirement (default: the version the spec was observed on)
#   BRIXO_CACHE_DIR   where the environments live (default: ${XDG_CACHE_HOME:-~/.cache}/brixo-otel)
set -euo pipefail

VERSION="${MLFLOW_VERSION:-3.17.2}"
CACHE="${BRIXO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/brixo-otel}"
VENV="$CACHE/mlflow-venv"
STAMP="$VENV/.installed-$VERSION"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/mlflow" ]; then
    echo "$VENV/bin/mlflow"
    exit 0
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for candidate in python3.11 python3.12 python3 ; do
        if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
    done
fi
if [ -z "$PY" ]; then
    echo "no python3 found to create the MLflow environment" >&2
    exit 1
fi

mkdir -p "$CACHE"
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mlflow==$VERSION" >&2

if [ ! -x "$VENV/bin/mlflow" ]; then
    echo "mlflow installed, but $VENV/bin/mlflow is missing" >&2
    exit 1
fi
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "$VENV/bin/mlflow"
