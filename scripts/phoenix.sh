#!/usr/bin/env bash
# Make a real Arize Phoenix server available for tests/test_exporter_phoenix.py.
#
# The Phoenix exporter is only proven by the server itself: the span id casing it accepts, its
# upsert key, what `sync=true` answers for a span not ingested yet, and how it classifies a span
# are facts of the real server, not of a fake. About 850 MB and several minutes the first time
# (see server-venv.sh). Prints the path of the `phoenix` executable.
#
#   PHOENIX_VERSION   the arize-phoenix version (default: the one the spec was observed on)
set -euo pipefail
exec bash "$(dirname "$0")/server-venv.sh" phoenix arize-phoenix "${PHOENIX_VERSION:-20.26.1}" phoenix
