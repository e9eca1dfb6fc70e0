#!/usr/bin/env bash
# Install a server the tests run for real (Phoenix, MLflow) from PyPI into a cached virtual
# environment of its own, never into the project's .venv: such servers have large dependency trees
# that would pin the library's own. Idempotent and fast when the environment is already there.
# Prints the path of the server's executable on success; exits non-zero when it cannot install.
#
#   usage: server-venv.sh NAME REQUIREMENT VERSION EXECUTABLE
#   BRIXO_CACHE_DIR   where the environments live (default: ${XDG_CACHE_HOME:-~/.cache}/brixo-otel)
set -euo pipefail

NAME="$1" REQUIREMENT="$2" VERSION="$3" EXECUTABLE="$4"
CACHE="${BRIXO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/brixo-otel}"
VENV="$CACHE/$NAME-venv"
STAMP="$VENV/.installed-$VERSION"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/$EXECUTABLE" ]; then
    echo "$VENV/bin/$EXECUTABLE"
    exit 0
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for candidate in python3.11 python3.12 python3 ; do
        if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
    done
fi
if [ -z "$PY" ]; then
    echo "no python3 found to create the $NAME environment" >&2
    exit 1
fi

mkdir -p "$CACHE"
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$REQUIREMENT==$VERSION" >&2

if [ ! -x "$VENV/bin/$EXECUTABLE" ]; then
    echo "$REQUIREMENT installed, but $VENV/bin/$EXECUTABLE is missing" >&2
    exit 1
fi
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "$VENV/bin/$EXECUTABLE"
