#!/usr/bin/env bash
# Installs helm v4.3.2 (for `helm lint` / `helm template` in deploy/helm_test.go) into
# the cache directory when missing, and prints its path. (go install builds report no
# version, so a marker file records which version is there.)
set -euo pipefail
version=v4.3.2
bin="${XDG_CACHE_HOME:-$HOME/.cache}/iotsupport/bin"
mkdir -p "$bin"
if [ ! -x "$bin/helm" ] || [ "$(cat "$bin/helm.version" 2>/dev/null)" != "$version" ]; then
  echo "installing helm $version into $bin (first run only, a few minutes)" >&2
  GOBIN="$bin" go install "helm.sh/helm/v4/cmd/helm@$version" >&2
  echo "$version" > "$bin/helm.version"
fi
echo "$bin/helm"
