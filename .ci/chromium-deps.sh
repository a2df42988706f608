#!/usr/bin/env bash
# Install headless Chromium (Debian's `chromium` package) for the report's browser tests
# (tests/test_report_browser.py renders the HTML report and screenshots it).
# Called by .ci/run; needs root (or sudo). Safe to re-run.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium-deps: $(chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium-deps: installed $(chromium --version 2>/dev/null || echo chromium)"
