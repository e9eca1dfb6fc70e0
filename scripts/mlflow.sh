#!/usr/bin/env bash
# Make a real MLflow tracking server available for tests/test_exporter_mlflow.py.
#
# The MLflow exporter is only proven by the server itself: the `tr-` trace id prefix, the 500 it
# answers to a repeated assessment id, and how it types a span are facts of the real server, not
# of a fake. About 850 MB the first time (see server-venv.sh). Prints the path of `mlflow`.
#
#   MLFLOW_VERSION    the mlflow version (default: the one the spec was observed on)
set -euo pipefail
exec bash "$(dirname "$0")/server-venv.sh" mlflow mlflow "${MLFLOW_VERSION:-3.17.2}" mlflow
