#!/usr/bin/env bash
# The hand-written alternative to `lapse` for object storage: list every version under a prefix,
# keep those whose key date is at or before THRESHOLD and whose subject is not held, delete them
# with delete-objects, 1000 per call.
#   aws-cli-delete.sh AWS ENDPOINT BUCKET PREFIX THRESHOLD(YYYY-MM-DD) HELD.json WORKDIR
set -euo pipefail
AWS=$1 EP=$2 BUCKET=$3 PREFIX=$4 THRESHOLD=$5 HELD=$6 WORK=$7
"$AWS" --endpoint-url "$EP" s3api list-object-versions --bucket "$BUCKET" --prefix "$PREFIX" --output json \
    >"$WORK/versions.json"
jq -c --arg t "$THRESHOLD" --slurpfile held "$HELD" '
  ($held[0] | map({(.): true}) | add // {}) as $h
  | [(.Versions // []) + (.DeleteMarkers // []) | .[]
   | (.Key | capture("/(?<y>[0-9]{4})/(?<m>[0-9]{2})/(?<d>[0-9]{2})/customer-(?<s>[^/]+)\\.csv$")) as $k
   | select("\($k.y)-\($k.m)-\($k.d)" <= $t and ($h[$k.s] | not))
   | {Key, VersionId}]
  | _nwise(1000) | {Objects: ., Quiet: true}' "$WORK/versions.json" >"$WORK/batches.jsonl"
n=0
while IFS= read -r batch; do
    n=$((n + 1))
    printf '%s' "$batch" >"$WORK/batch.json"
    "$AWS" --endpoint-url "$EP" s3api delete-objects --bucket "$BUCKET" --delete "file://$WORK/batch.json" >/dev/null
done <"$WORK/batches.jsonl"
echo "delete-objects calls: $n"
