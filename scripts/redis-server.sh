#!/usr/bin/env bash
# Make `redis-server` available for the Redis span index tests.
#
# The tests need a real server (a fake would not show timeouts, reconnects or key expiry as Redis
# does them), and Debian's package is the quickest dependable way to get one on a CI image.
# Prints the path of the binary on success; exits non-zero when it cannot be installed.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is not installed and apt-get is not available; install Redis (>= 6)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "redis-server is not installed; run as root or install it: apt-get install redis-server" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends redis-server >&2

# The package starts a system-wide instance on 6379; the tests run their own on a free port, so
# stop it where a service manager exists (containers usually have none, and nothing to stop).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    $SUDO systemctl stop redis-server >/dev/null 2>&1 || true
fi

command -v redis-server
