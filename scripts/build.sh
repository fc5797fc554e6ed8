#!/bin/sh
# Builds the release binary: static (CGO_ENABLED=0; the SQLite driver is pure Go),
# reproducible paths (-trimpath), version, commit and date stamped with -ldflags.
# The Dockerfile runs this script and deploy/image_test.go runs it too, so the flags
# live only here.
# Usage: [VERSION=1.2.3] [COMMIT=sha] [DATE=2026-01-02T03:04:05Z] sh scripts/build.sh OUTPUT
set -eu
out="${1:?usage: build.sh OUTPUT}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$(dirname "$0")/.."
version="${VERSION:-dev}"
commit="${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
date="${DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
CGO_ENABLED=0 go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$date" \
  -o "$out" ./cmd/iotsupport
