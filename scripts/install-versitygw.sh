#!/usr/bin/env bash
# Installs versitygw v1.8.0 (the real S3 server the tests use) into the cache
# directory when missing, and prints its path. (go install builds report no version,
# so a marker file records which version is there.)
set -euo pipefail
version=v1.8.0
bin="${XDG_CACHE_HOME:-$HOME/.cache}/iotsupport/bin"
mkdir -p "$bin"
if [ ! -x "$bin/versitygw" ] || [ "$(cat "$bin/versitygw.version" 2>/dev/null)" != "$version" ]; then
  echo "installing versitygw $version into $bin (first run only, about 2 minutes)" >&2
  GOBIN="$bin" go install "github.com/versity/versitygw/cmd/versitygw@$version" >&2
  echo "$version" > "$bin/versitygw.version"
fi
echo "$bin/versitygw"
