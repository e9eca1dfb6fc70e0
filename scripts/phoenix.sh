#!/usr/bin/env bash
# Make a real Arize Phoenix server available for tests/test_exporter_phoenix.py.
#
# The Phoenix exporter is only proven by the server itself: the span id casing it accepts, its
# upsert key, what `sync=true` answers for a span not ingested yet, and how it classifies a span
# are facts of the real server, not of a fake. Phoenix is installed from PyPI into its own cached
# virtual environment (about 850 MB and several minutes the first time), never into the project's
# .venv: its dependency tree is large and would pin the library's own. Idempotent and fast when the
# environment is already there. Prints the path of the `phoenix` executable on success; exits
# non-zero when it cannot be installed.
#
#   PHOENIX_VERSION   the arize-phoenix requirement (default: the version the spec was observed on)
#   BRIXO_CACHE_DIR   where the environments live (default: ${XDG_CACHE_HOME:-~/.cache}/brixo-otel)
set -euo pipefail

VERSION="${PHOENIX_VERSION:-20.26.1}"
CACHE="${BRIXO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/brixo-otel}"
VENV="$CACHE/phoenix-venv"
STAMP="$VENV/.installed-$VERSION"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/phoenix" ]; then
    echo "$VENV/bin/phoenix"
    exit 0
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for candidate in python3.11 python3.12 python3 ; do
        if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
    done
fi
if [ -z "$PY" ]; then
    echo "no python3 found to create the Phoenix environment" >&2
    exit 1
fi

mkdir -p "$CACHE"
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "arize-phoenix==$VERSION" >&2

if [ ! -x "$VENV/bin/phoenix" ]; then
    echo "arize-phoenix installed, but $VENV/bin/phoenix is missing" >&2
    exit 1
fi
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "$VENV/bin/phoenix"
