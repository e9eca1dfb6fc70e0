#!/usr/bin/env bash
# Make the `prometheus` server binary available for tests/test_prometheus.py.
#
# The test scrapes the example app with a real Prometheus and runs the dashboard's PromQL through
# it, because only the real query engine shows whether the queries and label names are right.
# Debian's package is the quickest dependable way to get the binary on a CI image. Idempotent:
# when `prometheus` is already on PATH nothing is installed. Prints the path of the binary on
# success; exits non-zero when it cannot be installed.
#
# The package would start a system-wide Prometheus listening on 0.0.0.0:9090; the tests run
# their own on a free loopback port, so this script keeps the packaged service from starting and
# makes sure it is stopped and disabled afterwards.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    command -v prometheus
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus is not installed and apt-get is not available; install Prometheus (>= 2.30)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "prometheus is not installed; run as root or install it: apt-get install prometheus" >&2
        exit 1
    fi
fi

# invoke-rc.d and deb-systemd-invoke ask policy-rc.d whether a package may start its service;
# exit code 101 means "no". Container images often ship one already; otherwise put a temporary
# one in place for the duration of the install, and take it away again however the script ends.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    trap '$SUDO rm -f "$POLICY"' EXIT
    printf '#!/bin/sh\n# temporary, from brixo-otel scripts/prometheus.sh\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 0755 "$POLICY"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    prometheus >&2

# Belt and braces, for hosts where the service started anyway (or was already installed and
# enabled): stop it now and keep it from starting at boot.
if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    else
        # no running systemd (a container): only the boot-time symlinks can be removed
        $SUDO systemctl disable prometheus.service >/dev/null 2>&1 || true
    fi
fi
if [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null 2>&1; then
        $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
fi

if ! command -v prometheus >/dev/null 2>&1; then
    echo "apt-get installed the prometheus package, but no prometheus binary is on PATH" >&2
    exit 1
fi
command -v prometheus
