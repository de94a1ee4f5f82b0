#!/usr/bin/env bash
# scripts/radosgw.sh — a throwaway one-node Ceph Object Gateway (radosgw), the S3 server many
# on-premises platforms run, for the S3 benchmark: one monitor, one OSD keeping its objects in
# memory (memstore), and radosgw, all from Debian's packages (Ceph 16.2 on Debian 12), started
# as plain processes (no systemd, no cephadm) under RUNDIR. The test suite runs its S3 checks on
# one too (scripts/testbed.sh).
#
#   scripts/radosgw.sh start RUNDIR PORT   # S3 on http://127.0.0.1:PORT, user benchkey/benchsecret
#                                          # (RGW_ACCESS_KEY / RGW_SECRET_KEY to choose others),
#                                          # and a user `limited` (limitedkey/limitedsecret) that
#                                          # owns nothing: what it may do, buckets' policies grant
#                                          # (tests/it/privilege.rs)
#   scripts/radosgw.sh pids RUNDIR         # the daemons' pids, comma-separated (for CPU accounting)
#   scripts/radosgw.sh stop RUNDIR
#
# Configuration: Ceph's defaults except what one node in memory needs (pools of one replica,
# authentication off between the daemons; S3 requests are still signed and checked) and
# `rgw_multi_obj_del_max_aio = 1`: with the default (16), radosgw 16.2.15 deletes the keys of
# one DeleteObjects request concurrently and crashed here (SIGSEGV in
# RGWDeleteMultiObj::handle_individual_object -> get_obj_state) under concurrent DeleteObjects
# requests; with 1 it deletes a request's keys one after another.
set -Eeuo pipefail
log() { printf '[radosgw] %s\n' "$*" >&2; }
# A step that fails says which, with the daemons' last log lines (set -e alone exits silently).
trap 'rc=$?; log "failed (exit $rc) at line $LINENO: $BASH_COMMAND"; tail -n 20 "${RUNDIR_LOGS:-/nonexistent}"/*.log >&2 2>/dev/null || true' ERR
ACCESS_KEY=${RGW_ACCESS_KEY:-benchkey} SECRET_KEY=${RGW_SECRET_KEY:-benchsecret}

install() {
    if command -v radosgw >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mon >/dev/null; then
        return
    fi
    log "installing radosgw, ceph-mon, ceph-osd (Debian packages)"
    local pkgs=(radosgw ceph-mon ceph-osd ceph-common)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${pkgs[@]}" >/dev/null; }
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir=$1 port=$2
    install
    stop "$dir"
    mkdir -p "$dir"/{mon,osd,log,run}
    RUNDIR_LOGS="$dir/log"
    local fsid osd_uuid mon_port
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    mon_port=$(free_port)
    while [[ "$mon_port" == "$port" ]]; do mon_port=$(free_port); done # PORT is not bound yet
    cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
osd crush chooseleaf type = 0
log file = $dir/log/\$name.log
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
ms bind ipv6 = false
[mon.a]
mon data = $dir/mon
[osd.0]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = 8589934592
# The OSD's own crush and class updates at start fail on a monitor started this way ('wrong
# fsid'); the placement is set below instead.
osd crush update on start = false
osd class update on start = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw multi obj del max aio = 1
CONF
    export CEPH_CONF="$dir/ceph.conf"
    monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$dir/monmap" >/dev/null 2>&1
    # Messenger v1 only: a v2 client without keys fails authentication on a monitor without any.
    ceph-mon -i a
    timeout 60 ceph osd create "$osd_uuid" >/dev/null
    ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
    ceph osd crush add osd.0 1 root=default >/dev/null 2>&1
    ceph-osd -i 0 2>/dev/null
    timeout 120 radosgw -n client.rgw
    for _ in $(seq 1 150); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=2)" 2>/dev/null; then
            radosgw-admin user create --uid bench --display-name bench --access-key "$ACCESS_KEY" \
                --secret "$SECRET_KEY" >/dev/null 2>&1
            radosgw-admin user create --uid limited --display-name limited --access-key limitedkey \
                --secret limitedsecret >/dev/null 2>&1
            log "radosgw ready on 127.0.0.1:$port (Ceph $(ceph-mon --version | awk '{print $3}'))"
            return
        fi
        sleep 0.2
    done
    tail -20 "$dir"/log/*.log >&2 || true
    log "radosgw did not answer on port $port"
    exit 1
}

pids() {
    local dir=$1 out=() f
    for f in mon.a osd.0 client.rgw; do
        [[ -f "$dir/run/$f.pid" ]] && out+=("$(cat "$dir/run/$f.pid")")
    done
    (IFS=,; echo "${out[*]}")
}

# Nothing to keep (the OSD's objects are in memory): a daemon still there after five seconds
# (an OSD waits for the monitor it is leaving) is killed.
stop() {
    local dir=$1 p pids=()
    [[ -d "$dir/run" ]] || return 0
    IFS=, read -ra pids <<<"$(pids "$dir")"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    any_alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
    for _ in $(seq 1 50); do
        any_alive || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}

case "${1:-}" in
start) start "$2" "$3" ;;
pids) pids "$2" ;;
stop) stop "$2" ;;
*)
    echo "usage: $0 start RUNDIR PORT | pids RUNDIR | stop RUNDIR" >&2
    exit 2
    ;;
esac
