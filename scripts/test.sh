#!/usr/bin/env bash
# The whole test suite: formatting, vet, staticcheck, then every package's tests.
# Storage-touching suites run on SQLite + a local directory and on PostgreSQL
# (127.0.0.1:5432, database test) + a real S3 server (versitygw, started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${XDG_CACHE_HOME:-$HOME/.cache}/iotsupport/bin"
mkdir -p "$bin"
VERSITYGW_BIN="$(bash scripts/install-versitygw.sh)"
export VERSITYGW_BIN
# deploy/helm_test.go lints and renders the Helm chart with it.
HELM_BIN="$(bash scripts/install-helm.sh)"
export HELM_BIN
# internal/console's browser test drives Debian's chromium; it fails (naming this command) without it.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM_BIN:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (apt-get) for the console's browser test" >&2
    apt-get update -qq && apt-get install -y -qq chromium
  else
    echo "chromium is missing: the console's browser test will fail; run: sudo apt-get install -y chromium" >&2
  fi
fi
if [ ! -x "$bin/staticcheck" ]; then
  echo "installing staticcheck into $bin" >&2
  GOBIN="$bin" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

unformatted=$(gofmt -l cmd internal deploy)
if [ -n "$unformatted" ]; then
  echo "not gofmt-formatted:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
"$bin/staticcheck" ./...
# The test-only hooks (cmd/iotsupport/testhooks_on.go) build only with their tag.
go vet -tags iotsupport_testhooks ./cmd/iotsupport
"$bin/staticcheck" -tags iotsupport_testhooks ./cmd/iotsupport
go test -count=1 -timeout 30m ./...
# Every fuzz target for FUZZTIME (default 20s) each, one at a time.
bash scripts/fuzz.sh
