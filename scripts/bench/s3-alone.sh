#!/usr/bin/env bash
# scripts/bench/s3-alone.sh — `lapse run` alone on a fresh Ceph RGW (scripts/radosgw.sh) per run,
# 50,000 objects loaded as scripts/bench.sh loads them, for A/B experiments on the S3 path that
# the full benchmark's spread would hide (BENCHMARKS.md, S3). scripts/bench.sh remains the
# benchmark: this times lapse only, never the AWS CLI.
#
#   scripts/bench/s3-alone.sh [--lapse BIN] [--objects N] SPEC...
#
# Each SPEC is one run, in the order given: `cC` for the connection's `concurrency` C (c3: at most
# three DeleteObjects calls in flight), `NAME=BIN` for another lapse binary at the default
# concurrency. Prints one line per run: seconds, server CPU seconds, lapse's own CPU seconds,
# peak RSS. Needs .bench/venv (made by scripts/bench.sh) and Ceph's packages (scripts/radosgw.sh
# installs them).
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
LAPSE=target/release/lapse OBJECTS=50000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --lapse) LAPSE=$2; shift 2 ;;
        --objects) OBJECTS=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [--lapse BIN] [--objects N] SPEC..." >&2; exit 2; }
RUNDIR=$PWD/.bench/radosgw OUT=$PWD/.bench/s3-alone
mkdir -p "$OUT"
trap 'scripts/radosgw.sh stop "$RUNDIR" >/dev/null 2>&1 || true' EXIT
for spec in "$@"; do
    bin=$LAPSE conc=0 name=$spec
    case "$spec" in
        c[0-9]*) conc=${spec#c} ;;
        *=*) name=${spec%%=*} bin=${spec#*=} ;;
        *) echo "bad spec: $spec (cC or NAME=BIN)" >&2; exit 2 ;;
    esac
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    scripts/radosgw.sh start "$RUNDIR" "$port" >"$OUT/radosgw.log" 2>&1
    pids=$(scripts/radosgw.sh pids "$RUNDIR")
    json="$OUT/$name-$(date -u +%Y%m%dT%H%M%SZ).json"
    AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret .bench/venv/bin/python scripts/bench/s3bench.py \
        --objects "$OBJECTS" --endpoint "http://127.0.0.1:$port" --lapse "$(realpath "$bin")" \
        --aws .bench/venv/bin/aws --work "$OUT/work" --anonymous-load --concurrency "$conc" \
        --contenders lapse --server-name radosgw --server-pid "$pids" --json-out "$json" >"$OUT/$name.log" 2>&1
    python3 - "$name" "$json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[2]))[0]
print(f"{sys.argv[1]:>8}  {r['seconds']:7.2f} s  server CPU {r['server_cpu_s']:6.2f} s  lapse CPU {r['client_cpu_s']:5.2f} s"
      f"  peak RSS {r['peak_rss_kib'] / 1024:5.1f} MiB  exit {r['exit']}  signature {r['signature']}", flush=True)
EOF
    scripts/radosgw.sh stop "$RUNDIR" >/dev/null 2>&1
done
