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

# One exact version, so that a fresh machine tests against the server the suite was verified on.
# Not newer: from 5.2.6 moto authorizes an S3 request by its API operation's name
# (`s3:ListObjectVersions`, `s3:HeadObject`) rather than by the IAM action AWS checks
# (`s3:ListBucketVersions`, `s3:GetObject`), so the README's IAM actions (tests/it/privilege.rs)
# are refused there although AWS grants them.
MOTO_VERSION=5.2.5

install() {
    if [[ -x "$VENV/bin/moto_server" ]] &&
        [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" == "$MOTO_VERSION" ]]; then
        return
    fi
    log "installing moto[server]==$MOTO_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# Two fixes to moto 5's ListObjectVersions, applied to the installed copy (idempotent; says so if a
# moto upgrade moved the code):
# 1. It deep-copies every version of every key in the bucket on each page request (FakeKey pickles
#    its body into a fresh temporary file per copy): O(bucket) CPU and memory per page, gigabytes
#    for the 20,000-object test. The copies only exist so the listing can set `is_latest`, which it
#    computes correctly on the originals, so list the originals.
# 2. With a KeyMarker and no VersionIdMarker it skips the first version at or after the marker:
#    right only when the marker key exists and has one version. Real S3 resumes strictly after the
#    marker key (all its versions excluded); moto skipped the next key when the marker had been
#    deleted meanwhile, and returned the older versions of the marker key again.
patch_versions_listing() {
    local models
    models=$(echo "$VENV"/lib/python3*/site-packages/moto/s3/models.py)
    "$VENV/bin/python" - "$models" <<'PY'
import sys
path = sys.argv[1]
s = open(path).read()
fixes = [
    ("copy.deepcopy(version_key)", "list(version_key)  # lapse: scripts/moto.sh"),
    ("                    skip_versions = version.name < key_marker\n                    continue\n",
     "                    if version.name <= key_marker:  # lapse: scripts/moto.sh\n"
     "                        continue\n                    skip_versions = False\n"),
]
for old, new in fixes:
    if old in s:
        s = s.replace(old, new)
        print("[moto] patched ListObjectVersions:", new.split("#")[0].strip(), file=sys.stderr)
    elif new not in s:
        print("[moto] warning: ListObjectVersions changed; a scripts/moto.sh fix no longer applies", file=sys.stderr)
open(path, "w").write(s)
PY
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
