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

case "${1:-}" in
start)
    rundir=$2 port=$3
    install
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
