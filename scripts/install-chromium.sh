#!/bin/sh
# Headless Chromium for the explorer's browser test (tests/functional/test_explorer.py), from Debian's
# packages. playwright-core drives this binary; it never downloads a browser of its own.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-chromium: chromium is missing; as root run: apt-get install -y chromium chromium-driver" >&2
    echo "install-chromium: the explorer's browser test needs it and fails without it" >&2
    exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
