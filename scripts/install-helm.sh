#!/usr/bin/env bash
# Installs helm v4.3.2 (for `helm lint` / `helm template` in deploy/helm_test.go) into
# the cache directory when missing, and prints its path.
set -euo pipefail
exec bash "$(dirname "$0")/install-go-tool.sh" helm helm.sh/helm/v4/cmd/helm v4.3.2
