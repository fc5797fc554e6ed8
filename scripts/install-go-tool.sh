#!/usr/bin/env bash
# Usage: install-go-tool.sh NAME PACKAGE VERSION
# Installs a Go-built tool into the cache directory when missing (or at another version)
# and prints its path. go install builds report no version, so a marker file NAME.version
# records which version is there.
set -euo pipefail
name=$1 pkg=$2 version=$3
bin="${XDG_CACHE_HOME:-$HOME/.cache}/iotsupport/bin"
mkdir -p "$bin"
if [ ! -x "$bin/$name" ] || [ "$(cat "$bin/$name.version" 2>/dev/null)" != "$version" ]; then
  echo "installing $name $version into $bin (first run only, a few minutes)" >&2
  GOBIN="$bin" go install "$pkg@$version" >&2
  echo "$version" > "$bin/$name.version"
fi
echo "$bin/$name"
