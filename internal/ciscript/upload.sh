#!/usr/bin/env bash
# Uploads an ESP-IDF build to IoT Support as a firmware bundle and prints the stored
# firmware version.
# Usage: upload.sh [model_code] [path/to/firmware.bin]
# Without arguments, reads build/project_description.json: project_name is the model
# code and build/{project_name}.bin the binary. Needs IOTSUPPORT_TOKEN (a pipeline token),
# curl and zip, and python3 when build/project_description.json exists.
set -euo pipefail
BACKEND_URL=__BACKEND_URL__
if [ -z "${IOTSUPPORT_TOKEN:-}" ]; then
  if [ -n "${IOTSUPPORT_CLIENT_ID:-}" ]; then
    echo "IOTSUPPORT_CLIENT_ID/IOTSUPPORT_CLIENT_SECRET are not used here: set IOTSUPPORT_TOKEN to a pipeline token, or to an access token issued to that client" >&2
  else
    echo "set IOTSUPPORT_TOKEN to a pipeline token (iotsupport token create --name ci --role pipeline)" >&2
  fi
  exit 1
fi
desc=build/project_description.json
# project prints a field of project_description.json as a JSON value ("unknown" when absent).
project() {
  python3 -c 'import json,sys;print(json.dumps(str(json.load(open(sys.argv[1])).get(sys.argv[2],"unknown"))))' "$desc" "$1"
}
model="${1:-}"
bin="${2:-}"
if [ -z "$model" ] || [ -z "$bin" ]; then
  [ -f "$desc" ] || { echo "no arguments and no $desc" >&2; exit 1; }
  name=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["project_name"])' "$desc")
  model="${model:-$name}"
  bin="${bin:-build/$name.bin}"
fi
case "$model" in
  ''|*[!a-z0-9_]*) echo "model code must match ^[a-z0-9_]+\$, got: $model" >&2; exit 1 ;;
esac
base="${bin%.bin}"
for f in "$bin" "$base.elf" "$base.map" sdkconfig; do
  [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only a commit id goes into the JSON as is: a repository without commits, or no git, is "unknown".
git_commit=$(git rev-parse --verify --quiet HEAD 2>/dev/null || true)
case "$git_commit" in
  ''|*[!0-9a-f]*) git_commit=unknown ;;
esac
# The firmware version is the one in the image's app descriptor (esp_app_desc_t, after the
# 24-byte image header and the first 8-byte segment header): the service refuses any other.
if [ "$(od -An -tx1 -j32 -N4 "$bin" | tr -d ' \n')" != "3254cdab" ]; then
  echo "$bin is not an ESP-IDF app image (no app descriptor at offset 32)" >&2; exit 1
fi
fw=$(dd if="$bin" bs=1 skip=48 count=32 2>/dev/null | tr -d '\000')
case "$fw" in
  ''|*[!A-Za-z0-9._+-]*) echo "the app version in $bin is not a valid firmware version: $fw" >&2; exit 1 ;;
esac
fw_version="\"$fw\""
idf_version='"unknown"'
if [ -f "$desc" ]; then
  idf_version=$(project git_revision)
fi
printf '{"git_commit":"%s","idf_version":%s,"firmware_version":%s}\n' "$git_commit" "$idf_version" "$fw_version" > "$work/version.json"
cp "$bin" "$work/$model.bin"; cp "$base.elf" "$work/$model.elf"; cp "$base.map" "$work/$model.map"; cp sdkconfig "$work/sdkconfig"
(cd "$work" && zip -q -j bundle.zip "$model.bin" "$model.elf" "$model.map" sdkconfig version.json)
status=$(curl -sS -o "$work/response" -w '%{http_code}' -X POST -H "Authorization: Bearer $IOTSUPPORT_TOKEN" \
  -H "Content-Type: application/zip" --data-binary "@$work/bundle.zip" "$BACKEND_URL/api/pipeline/models/$model/firmware")
# field prints a string field of the JSON response (JSON escapes of quotes and backslashes undone).
field() {
  sed -nE 's/.*"'"$1"'":"(([^"\\]|\\.)*)".*/\1/p' "$work/response" | sed -e 's/\\"/"/g' -e 's/\\\\/\\/g'
}
case "$status" in
  2??)
    v=$(field firmware_version)
    [ -n "$v" ] || v=$(cat "$work/response")
    echo "$v"
    ;;
  *)
    msg=$(field error)
    [ -n "$msg" ] || msg=$(cat "$work/response")
    echo "upload failed (HTTP $status): $msg" >&2
    exit 1
    ;;
esac
