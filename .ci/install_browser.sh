#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_browser.py) when it is missing.
# Idempotent: does nothing when /usr/bin/chromium exists. Never downloads a browser any other way
# (no `playwright install`): Playwright drives this Chromium through executable_path.
# Bounded: apt-get update and install each get a time limit, and a failure says what to do.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
UPDATE_TIMEOUT_S=${FSAD_APT_UPDATE_TIMEOUT_S:-300}
INSTALL_TIMEOUT_S=${FSAD_APT_INSTALL_TIMEOUT_S:-600}

if [ -x "${CHROMIUM}" ]; then
    echo "install_browser: ${CHROMIUM} present ($("${CHROMIUM}" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: ${CHROMIUM} is missing and apt-get is not available; install Chromium so that" \
         "${CHROMIUM} exists (or set FSAD_CHROMIUM to a Chromium binary for the test)." >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install_browser: not root and no sudo; run 'apt-get install -y --no-install-recommends chromium' as root." >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser: ${CHROMIUM} missing; installing Debian's chromium package"
if ! timeout "${UPDATE_TIMEOUT_S}" ${SUDO} apt-get update -q; then
    echo "install_browser: 'apt-get update' failed or exceeded ${UPDATE_TIMEOUT_S} s (is the Debian mirror reachable?)." >&2
    exit 1
fi
if ! timeout "${INSTALL_TIMEOUT_S}" ${SUDO} apt-get install -y -q --no-install-recommends chromium; then
    echo "install_browser: 'apt-get install chromium' failed or exceeded ${INSTALL_TIMEOUT_S} s." >&2
    exit 1
fi
if [ ! -x "${CHROMIUM}" ]; then
    echo "install_browser: the chromium package installed but ${CHROMIUM} is still missing." >&2
    exit 1
fi
echo "install_browser: installed $("${CHROMIUM}" --version 2>/dev/null || echo chromium)"
