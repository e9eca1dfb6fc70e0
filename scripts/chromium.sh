#!/usr/bin/env bash
# Make Debian's `chromium` available for the browser tests of the thumbs widget.
#
# The tests drive the system browser through Playwright's Python package and never run
# `playwright install` (no browser download from outside the package registry). The colour
# emoji font is installed with it, so the 👍/👎 buttons show in the tests' screenshots.
# Prints the path of the binary on success; exits non-zero when it cannot be installed.
# Safe to run again: it installs only what is missing.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if command -v dpkg-query >/dev/null 2>&1 \
    && ! dpkg-query -W -f='${Status}' fonts-noto-color-emoji 2>/dev/null | grep -q "ok installed"; then
    missing+=(fonts-noto-color-emoji)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    command -v chromium
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}, and apt-get is not available; install Chromium" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "missing: ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq "${missing[@]}" >&2

command -v chromium
