#!/usr/bin/env bash
# Regenerates docs/screenshots/ (every console page at desktop and phone width) by running
# the browser test against real headless Chromium (`apt-get install -y chromium`).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -run TestBrowserEndToEnd ./internal/console/ -args -screenshots
