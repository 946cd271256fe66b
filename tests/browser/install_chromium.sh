#!/usr/bin/env bash
# Install a real headless browser (Chromium and its WebDriver, Debian packages) for the
# report test, when missing. Idempotent; needs root to install. Prints the two paths.
set -euo pipefail

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
echo "chromium $(command -v chromium)"
echo "chromedriver $(command -v chromedriver)"
