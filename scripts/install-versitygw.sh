#!/usr/bin/env bash
# Installs versitygw v1.8.0 (the real S3 server the tests use) into the cache
# directory when missing, and prints its path.
set -euo pipefail
exec bash "$(dirname "$0")/install-go-tool.sh" versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0
