#!/usr/bin/env bash
# scripts/bench.sh — lapse against the hand-written DELETE / UPDATE and `aws s3api` it replaces.
#
#   scripts/bench.sh [--rows N] [--big] [--objects M] [--only pg,mysql,sqlite,s3]
#                    [--batch B] [--lapse-batch B] [--repeat R] [--rss-sizes 100000,1000000]
#                    [--s3-servers radosgw,moto] [--contenders LIST] [--out FILE]
#
#   --rows N        rows of the SQL table (default 1,000,000); --big: 10,000,000
#   --objects M     objects in the versioned bucket (default 50,000)
#   --only LIST     any of pg, mysql, sqlite, s3, rss (default: all but rss)
#   --batch B       batch of the hand-written loop (default 5000)
#   --lapse-batch B lapse --batch-size (default: lapse's own default); S3: the policy's batch_size
#   --repeat R      R rounds of every contender, one after another; the median time is
#                   reported (default 1; this machine's runs vary by up to a third). S3: a
#                   fresh server for each contender in each round, the order alternating
#   --lapse-bin F   time this lapse binary instead of building one (cargo build --release)
#   --rss-sizes L   with `rss` in --only: peak RSS of `lapse run` (delete and anonymize, PostgreSQL) at these
#                   table sizes, side by side (default 100000,1000000)
#   --s3-servers L  with `s3` in --only: the S3 servers to run it on, one after the other
#                   (default radosgw,moto): radosgw, Ceph's S3 gateway (scripts/radosgw.sh), and
#                   moto, the test suite's server (scripts/moto.sh)
#   --contenders L  SQL contenders to time (default all: lapse-, batched-, limited-, single-
#                   delete and anonymize; above 1,000,000 rows all but limited-anonymize, whose
#                   statements each read past every row changed before them: quadratic)
#   --out FILE      JSON results (default .bench/results-<time>.json); a Markdown summary is
#                   printed at the end
#
# Builds lapse in release mode, reuses the test servers of scripts/testbed.sh when they answer
# (starts them otherwise), installs its Python dependencies (psycopg, pymysql, boto3, awscli)
# into .bench/venv, Ceph's packages for the S3 part on radosgw (scripts/radosgw.sh, Debian's
# radosgw, ceph-mon, ceph-osd), and runs the drivers in scripts/bench/. Every contender gets fresh, identical
# data; the drivers check that contenders leave identical results and mark any difference.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
ROWS=1000000 OBJECTS=50000 ONLY="pg,mysql,sqlite,s3" BATCH=5000 LAPSE_BATCH=0 REPEAT=1 RSS_SIZES="100000,1000000" LAPSE_BIN="" S3_SERVERS="radosgw,moto" CONTENDERS=""
OUT=".bench/results-$(date -u +%Y%m%dT%H%M%SZ).json"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --big) ROWS=10000000; shift ;;
    --objects) OBJECTS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --lapse-batch) LAPSE_BATCH=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --lapse-bin) LAPSE_BIN=$2; shift 2 ;;
    --rss-sizes) RSS_SIZES=$2; shift 2 ;;
    --s3-servers) S3_SERVERS=$2; shift 2 ;;
    --contenders) CONTENDERS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
log() { printf '[bench] %s\n' "$*" >&2; }
has() { [[ ",$ONLY," == *",$1,"* ]]; }
# Above 1,000,000 rows the `LIMIT`-loop anonymize is left out unless --contenders names it: each
# of its statements reads past every row changed before it, so its time grows with the square
# of the table (25 s on MariaDB at 1M, more than 40 min at 10M).
if [[ -z "$CONTENDERS" && "$ROWS" -gt 1000000 ]]; then
    CONTENDERS="lapse-delete,batched-delete,limited-delete,single-delete,lapse-anonymize,batched-anonymize,single-anonymize"
    log "$ROWS rows: the LIMIT-loop anonymize is left out (quadratic); --contenders to time it"
fi

mkdir -p .bench
if [[ -n "$LAPSE_BIN" ]]; then
    cp "$LAPSE_BIN" .bench/lapse
else
    log "building lapse (release)"
    cargo build --release --quiet --bin lapse
    TARGET="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
    # A private copy: the shared target directory may be rebuilt by someone else meanwhile.
    cp "$TARGET/release/lapse" .bench/lapse
fi
LAPSE="$REPO_ROOT/.bench/lapse"

# GNU time measures the peak RSS of lapse alone (a child's ru_maxrss also counts the driver's
# memory from before the exec).
if [[ ! -x /usr/bin/time ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    log "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null || log "GNU time not installed: RSS figures include the driver's memory"
fi

VENV="$REPO_ROOT/.bench/venv"
if [[ ! -x "$VENV/bin/aws" ]] || ! "$VENV/bin/python" -c 'import psycopg, pymysql, boto3' 2>/dev/null; then
    log "installing psycopg, pymysql, boto3, awscli into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'psycopg[binary]>=3.1' pymysql boto3 'awscli>=1.32'
fi

servers_up() {
    [[ -f .testbed/env ]] || return 1
    # shellcheck disable=SC1091
    source .testbed/env
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import os, psycopg, pymysql
from urllib.parse import urlparse
psycopg.connect(os.environ["LAPSE_TEST_PG_URL"]).close()
u = urlparse(os.environ["LAPSE_TEST_MYSQL_URL"])
pymysql.connect(host=u.hostname, port=u.port, user=u.username, password=u.password, database=u.path[1:]).close()
PY
}
if ! servers_up; then
    log "starting the test servers (scripts/testbed.sh start)"
    LAPSE_TESTBED_RGW=0 scripts/testbed.sh start # the S3 part starts servers of its own
    servers_up || { log "test servers do not answer"; exit 1; }
fi
# shellcheck disable=SC1091
source .testbed/env

mkdir -p .bench "$(dirname "$OUT")"
WORK="$REPO_ROOT/.bench/work"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_MAX_ATTEMPTS=1
PARTS=()
only_sql=""
has pg && only_sql+="postgres,"
has mysql && only_sql+="mariadb,"
has sqlite && only_sql+="sqlite,"
if [[ -n "$only_sql" ]]; then
    log "SQL: $ROWS rows on ${only_sql%,}"
    "$VENV/bin/python" scripts/bench/sqlbench.py --rows "$ROWS" --only "${only_sql%,}" --batch "$BATCH" \
        --lapse-batch "$LAPSE_BATCH" --lapse "$LAPSE" --work "$WORK" --pg-url "$LAPSE_TEST_PG_URL" \
        --mysql-url "$LAPSE_TEST_MYSQL_URL" --repeat "$REPEAT" --plan --json-out "$OUT.sql" \
        ${CONTENDERS:+--contenders "$CONTENDERS"}
    PARTS+=("$OUT.sql")
fi
if has rss; then
    IFS=, read -ra sizes <<<"$RSS_SIZES"
    for n in "${sizes[@]}"; do
        log "RSS: lapse run (delete, anonymize) and plan at $n rows on PostgreSQL"
        "$VENV/bin/python" scripts/bench/sqlbench.py --rows "$n" --only postgres --contenders lapse-delete,lapse-anonymize \
            --lapse-batch "$LAPSE_BATCH" --lapse "$LAPSE" --work "$WORK" --pg-url "$LAPSE_TEST_PG_URL" \
            --plan --json-out "$OUT.rss-$n"
        PARTS+=("$OUT.rss-$n")
    done
fi
if has s3; then
    # Each S3 server of its own (a shared one may belong to someone else, and both keep every
    # object in memory): started here, stopped at the end.
    stop_s3() { scripts/moto.sh stop "$REPO_ROOT/.bench/moto"; scripts/radosgw.sh stop "$REPO_ROOT/.bench/radosgw"; }
    trap stop_s3 EXIT
    IFS=, read -ra servers <<<"$S3_SERVERS"
    for server in "${servers[@]}"; do
        for round in $(seq 1 "$REPEAT"); do
            # A fresh server for each contender, each round: a contender that runs second on a
            # server runs 5-20 % slower than on a fresh one (the first contender's emptied
            # bucket stays in the server's index). The order alternates from round to round.
            order=(lapse aws-cli)
            ((round % 2 == 0)) && order=(aws-cli lapse)
            for contender in "${order[@]}"; do
                S3_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
                case "$server" in
                moto)
                    scripts/moto.sh start "$REPO_ROOT/.bench/moto" "$S3_PORT"
                    pids=$(cat "$REPO_ROOT/.bench/moto/moto.pid") keys=(test test) extra=()
                    ;;
                radosgw)
                    scripts/radosgw.sh start "$REPO_ROOT/.bench/radosgw" "$S3_PORT"
                    pids=$(scripts/radosgw.sh pids "$REPO_ROOT/.bench/radosgw") keys=(benchkey benchsecret)
                    extra=(--anonymous-load)
                    ;;
                *) echo "unknown S3 server: $server (moto, radosgw)" >&2; exit 2 ;;
                esac
                log "S3 ($server, round $round of $REPEAT, $contender): $OBJECTS objects on http://127.0.0.1:$S3_PORT"
                AWS_ACCESS_KEY_ID=${keys[0]} AWS_SECRET_ACCESS_KEY=${keys[1]} \
                    "$VENV/bin/python" scripts/bench/s3bench.py --objects "$OBJECTS" --endpoint "http://127.0.0.1:$S3_PORT" \
                    --lapse "$LAPSE" --lapse-batch "$LAPSE_BATCH" --aws "$VENV/bin/aws" --work "$WORK" "${extra[@]}" \
                    --contenders "$contender" --server-name "$server" --server-pid "$pids" \
                    --json-out "$OUT.s3-$server-$round-$contender"
                PARTS+=("$OUT.s3-$server-$round-$contender")
                stop_s3
            done
        done
    done
fi
"$VENV/bin/python" scripts/bench/summary.py --out "$OUT" "${PARTS[@]}"
rm -f "${PARTS[@]}"
log "results: $OUT"
