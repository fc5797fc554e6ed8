#!/usr/bin/env bash
# Vendors the console's and its browser tests' JavaScript from npm at pinned versions:
# htmx into internal/console/static/vendor (embedded in the binary), axe-core into the
# browser tests' testdata. Run it only to change a version; nothing is fetched at build or run time.
set -euo pipefail
cd "$(dirname "$0")/.."
HTMX_VERSION=2.0.11
AXE_VERSION=4.14.1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "htmx.org@$HTMX_VERSION" "axe-core@$AXE_VERSION" >/dev/null)
tar xzf "$tmp/htmx.org-$HTMX_VERSION.tgz" -C "$tmp" && mv "$tmp/package" "$tmp/htmx"
tar xzf "$tmp/axe-core-$AXE_VERSION.tgz" -C "$tmp" && mv "$tmp/package" "$tmp/axe"
v=internal/console/static/vendor
cp "$tmp/htmx/dist/htmx.min.js" "$v/htmx.min.js"
cp "$tmp/htmx/LICENSE" "$v/htmx.LICENSE"
t=internal/console/testdata/axe
mkdir -p "$t"
cp "$tmp/axe/axe.min.js" "$t/axe.min.js"
cp "$tmp/axe/LICENSE" "$t/LICENSE"
printf 'htmx.org %s (npm), dist/htmx.min.js; license in htmx.LICENSE\n' "$HTMX_VERSION" >"$v/VERSIONS"
printf 'axe-core %s (npm), axe.min.js; license in LICENSE\n' "$AXE_VERSION" >"$t/VERSION"
