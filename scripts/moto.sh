#!/usr/bin/env bash
# scripts/moto.sh — a local S3-compatible server for the tests: moto's standalone server
# (versioning, delete markers, Object Lock legal hold and retention), installed from PyPI into a
# virtualenv under .testbed/venv (kept across runs, like helm).
#
#   scripts/moto.sh start RUNDIR PORT   # starts moto_server on 127.0.0.1:PORT, pid in RUNDIR/moto.pid
#   scripts/moto.sh stop RUNDIR
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.testbed/venv"
log() { printf '[moto] %s\n' "$*" >&2; }

install() {
    if [[ -x "$VENV/bin/moto_server" ]]; then
        return
    fi
    log "installing moto[server] into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
}

# moto 5's ListObjectVersions deep-copies every version of every key in the bucket on each page
# request (FakeKey pickles its body into a fresh temporary file per copy): O(bucket) CPU per page and
# memory that grew to gigabytes for the 20,000-object test. The copies only exist so the listing can
# set `is_latest`, which it computes correctly on the originals, so list the originals instead.
# Idempotent; says so if a moto upgrade moved the line.
patch_versions_listing() {
    local models
    models=$(echo "$VENV"/lib/python3*/site-packages/moto/s3/models.py)
    if grep -q 'copy.deepcopy(version_key)' "$models"; then
        sed -i 's/copy\.deepcopy(version_key)/list(version_key)  # lapse: scripts\/moto.sh/' "$models"
        log "patched moto ListObjectVersions (no deep copy per page)"
    elif ! grep -q 'list(version_key)  # lapse' "$models"; then
        log "warning: moto's ListObjectVersions changed; large-prefix tests may need a lot of memory"
    fi
}

case "${1:-}" in
start)
    rundir=$2 port=$3
    install
    patch_versions_listing
    mkdir -p "$rundir"
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$rundir/moto.log" 2>&1 </dev/null &
    echo $! >"$rundir/moto.pid"
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null; then
            log "moto_server ready on 127.0.0.1:$port"
            exit 0
        fi
        sleep 0.2
    done
    cat "$rundir/moto.log" >&2 || true
    log "moto_server did not answer on port $port"
    exit 1
    ;;
stop)
    rundir=$2
    if [[ -f "$rundir/moto.pid" ]]; then
        kill "$(cat "$rundir/moto.pid")" 2>/dev/null || true
        rm -f "$rundir/moto.pid"
    fi
    ;;
*)
    echo "usage: $0 start RUNDIR PORT | stop RUNDIR" >&2
    exit 2
    ;;
esac
