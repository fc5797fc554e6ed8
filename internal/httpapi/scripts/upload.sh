#!/usr/bin/env bash
# Uploads an ESP-IDF build to IoT Support as a firmware bundle.
# Usage: upload.sh [model_code] [path/to/firmware.bin]
# Without arguments, reads build/project_description.json: project_name is the model
# code and build/{project_name}.bin the binary. Needs IOTSUPPORT_TOKEN (a pipeline token).
set -euo pipefail
BACKEND_URL="__BACKEND_URL__"
: "${IOTSUPPORT_TOKEN:?set IOTSUPPORT_TOKEN to a pipeline token (iotsupport token create --role pipeline)}"
model="${1:-}"
bin="${2:-}"
if [ -z "$model" ] || [ -z "$bin" ]; then
  desc=build/project_description.json
  [ -f "$desc" ] || { echo "no arguments and no $desc" >&2; exit 1; }
  name=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["project_name"])' "$desc")
  model="${model:-$name}"
  bin="${bin:-build/$name.bin}"
fi
base="${bin%.bin}"
for f in "$bin" "$base.elf" "$base.map" sdkconfig; do
  [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
idf_version=unknown
fw_version=unknown
if [ -f build/project_description.json ]; then
  idf_version=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1])).get("git_revision","unknown"))' build/project_description.json)
  fw_version=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1])).get("project_version","unknown"))' build/project_description.json)
fi
printf '{"git_commit":"%s","idf_version":"%s","firmware_version":"%s"}\n' "$git_commit" "$idf_version" "$fw_version" > "$work/version.json"
cp "$bin" "$work/$model.bin"; cp "$base.elf" "$work/$model.elf"; cp "$base.map" "$work/$model.map"; cp sdkconfig "$work/sdkconfig"
(cd "$work" && zip -q -j bundle.zip "$model.bin" "$model.elf" "$model.map" sdkconfig version.json)
curl -fsS -X POST -H "Authorization: Bearer $IOTSUPPORT_TOKEN" -H "Content-Type: application/zip" \
  --data-binary "@$work/bundle.zip" "$BACKEND_URL/api/pipeline/models/$model/firmware"
echo
