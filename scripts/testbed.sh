#!/usr/bin/env bash
# scripts/testbed.sh — throwaway PostgreSQL 15 + MariaDB servers and two S3 servers (moto,
# Ceph RGW) for lapse's test suite. LAPSE_TESTBED_RGW=0 leaves Ceph RGW out (scripts/bench.sh:
# its S3 part starts servers of its own, and idle daemons would share the benchmark's cores).
#
# Usage:
#   scripts/testbed.sh start   # (re)create the servers, write .testbed/env
#                              # (installs missing packages, chromium included)
#   scripts/testbed.sh env     # print the export lines (source-able)
#   scripts/testbed.sh stop    # stop the servers and delete all state (downloaded tools stay)
#
# Designed for a bare Debian 12 box running as root without systemd (service
# starts are denied by policy-rc.d, so we never use the distro services): the
# servers run from a private data directory on non-default ports, bound to
# 127.0.0.1 only, with durability switched off for speed.
#
# Layout:
#   <repo>/.testbed/            state dir (gitignored)
#     rundir                    path of the real run directory (below)
#     env                       export lines for the tests
#     pg -> $RUNDIR/pg          convenience symlinks (logs live there)
#     mysql -> $RUNDIR/mysql
#     bin/helm, cache/          helm for the chart tests (scripts/helm.sh), kept across runs
#   /tmp/lapse-testbed.XXXXXX/  run directory ($RUNDIR, mode 0755)
#     pg/     owner postgres: data/, log, unix socket
#     mysql/  owner mysql:    data/, log, sock, pid
#     s3/     moto (scripts/moto.sh)
#     rgw/    Ceph RGW: monitor, OSD in memory, radosgw (scripts/radosgw.sh)
#
# The data lives under /tmp rather than inside the repo because the server
# processes run as the unprivileged users `postgres` and `mysql`, which must be
# able to traverse every parent directory; a checkout under e.g. /root (0700)
# would not allow that, /tmp always does.
#
# `start` is idempotent: it first tears down whatever a previous run left
# behind (servers recorded in .testbed are stopped), then starts fresh ones,
# so every test run begins with empty databases.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$REPO_ROOT/.testbed"
ENV_FILE="$STATE_DIR/env"

PG_BIN="${LAPSE_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_PORT_BASE=55432
MY_PORT_BASE=53306
DB_NAME=lapse_test
# Throwaway credentials for the MariaDB test user (not a secret: the server
# only listens on 127.0.0.1 and is deleted after the run).
MY_USER=lapse
MY_PASS=lapse

# ---------------------------------------------------------------- helpers ---

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

# Millisecond wall clock (bash 5's EPOCHREALTIME, e.g. "1700000000.123456").
now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }

# step_begin NAME / step_end: print how long each step took.
STEP_NAME="" STEP_T0=0
step_begin() { STEP_NAME=$1; STEP_T0=$(now_ms); log "$STEP_NAME ..."; }
step_end() {
    local ms=$(($(now_ms) - STEP_T0))
    log "$(printf '%-28s done in %d.%03ds' "$STEP_NAME" $((ms / 1000)) $((ms % 1000)))"
}

# Run a command as an unprivileged user from a directory that user can read
# (the caller's cwd may be unreadable to it, which initdb/pg_ctl complain about).
as_user() { local user=$1; shift; (cd / && runuser -u "$user" -- "$@"); }

# Is 127.0.0.1:PORT (or any address) taken: listened on, or held by any socket (a
# restarted testbed's closed connections linger in TIME-WAIT on the old servers' ports, and
# mariadbd cannot bind a port in that state: "Address already in use")?
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Htan "sport = :$port" 2>/dev/null)" ]]
    else
        # Fallback without iproute2: a successful connect means "taken".
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# First free TCP port at or above BASE (tries 100 ports).
pick_port() {
    local base=$1 port
    for ((port = base; port < base + 100; port++)); do
        if ! port_in_use "$port"; then echo "$port"; return 0; fi
    done
    die "no free TCP port in $base..$((base + 99))"
}

# Is PID alive and running the program named COMM? (Guards against killing an
# unrelated process that reused a stale pid.)
pid_is() {
    local pid=$1 comm=$2
    [[ "$pid" =~ ^[0-9]+$ ]] && ! pid_gone "$pid" &&
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]]
}

# Has PID exited? A zombie counts as exited: the servers are reparented to
# PID 1, which may take a while to reap them.
pid_gone() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }" # strip "pid (comm) ", leaving "STATE ..."
    [[ "${stat:0:1}" == Z ]]
}

# Wait up to SECS seconds for PID to exit; returns 1 on timeout.
wait_pid_gone() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        pid_gone "$pid" && return 0
        sleep 0.1
    done
    return 1
}

ensure_system_user() {
    local user=$1
    if ! id -u "$user" >/dev/null 2>&1; then
        log "creating system user $user"
        useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$user"
    fi
}

# Print the tail of a log file to stderr (used when a server fails to start).
show_log() {
    local file=$1
    [[ -r "$file" ]] || return 0
    log "---- last lines of $file ----"
    tail -n 40 "$file" >&2 || true
    log "-----------------------------"
}

# ---------------------------------------------------------------- install ---

APT_UPDATED=0
apt_install() {
    [[ $EUID -eq 0 ]] || die "packages missing ($*) and not running as root to install them"
    if [[ $APT_UPDATED -eq 0 ]]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

ensure_packages() {
    step_begin "check/install packages"
    local need_mariadb=0 tool
    for tool in mariadbd mariadb mariadb-admin mariadb-install-db; do
        # mariadbd lives in /usr/sbin, which may not be on a non-root PATH.
        command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" ]] || need_mariadb=1
    done
    if [[ $need_mariadb -eq 1 ]]; then
        log "installing mariadb-server mariadb-client"
        apt_install mariadb-server mariadb-client
    fi
    if [[ ! -x "$PG_BIN/initdb" ]]; then
        log "installing postgresql-15 ($PG_BIN/initdb missing)"
        apt_install postgresql-15
    fi
    [[ -x "$PG_BIN/initdb" ]] || die "$PG_BIN/initdb still missing after install"
    # Headless Chromium renders the HTML destruction report in tests/it/reports.rs
    # (run there as root with --headless --no-sandbox and a throwaway profile).
    if ! command -v chromium >/dev/null 2>&1; then
        log "installing chromium (headless rendering test of the HTML report)"
        apt_install chromium
    fi
    command -v chromium >/dev/null 2>&1 || die "chromium still missing after install"
    ensure_system_user postgres
    ensure_system_user mysql
    step_end
}

MARIADBD="$(command -v mariadbd || echo /usr/sbin/mariadbd)"

# ------------------------------------------------------------------- stop ---

stop_pg() {
    local dir=$1
    [[ -f "$dir/data/postmaster.pid" ]] || return 0
    local pid
    pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
    if ! pid_is "$pid" postgres; then
        log "postgres: stale pid file, server not running"
        return 0
    fi
    log "stopping postgres (pid $pid)"
    if ! as_user postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null; then
        log "pg_ctl stop failed; sending SIGQUIT to $pid"
        kill -QUIT "$pid" 2>/dev/null || true
    fi
    wait_pid_gone "$pid" 10 || { kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 5 || true; }
}

stop_mariadb() {
    local dir=$1 pid="" f
    # Prefer the server's own pid file; fall back to the pid we recorded at launch.
    for f in "$dir/pid" "$dir/launch.pid"; do
        if [[ -f "$f" ]]; then
            pid="$(cat "$f" 2>/dev/null || true)"
            pid_is "$pid" mariadbd && break
            pid=""
        fi
    done
    [[ -n "$pid" ]] || return 0
    log "stopping mariadbd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_gone "$pid" 30; then
        log "mariadbd did not exit in 30s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 5 || true
    fi
}

# Stop whatever servers the state dir points at and delete all state.
cmd_stop() {
    step_begin "stop servers / remove state"
    if [[ -f "$STATE_DIR/rundir" ]]; then
        local rundir
        rundir="$(cat "$STATE_DIR/rundir")"
        # Only ever delete directories we created ourselves.
        if [[ "$rundir" == /tmp/lapse-testbed.* && -d "$rundir" ]]; then
            stop_pg "$rundir/pg"
            stop_mariadb "$rundir/mysql"
            "$REPO_ROOT/scripts/moto.sh" stop "$rundir/s3" || true
            "$REPO_ROOT/scripts/radosgw.sh" stop "$rundir/rgw" || true
            rm -rf -- "$rundir"
        fi
    fi
    # Keep downloaded tools (bin/, cache/: see scripts/helm.sh); they are not server state.
    if [[ -d "$STATE_DIR" ]]; then
        find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name bin ! -name cache -exec rm -rf -- {} +
    fi
    step_end
}

# ------------------------------------------------------------------ start ---

start_pg() {
    local dir=$1 port=$2
    install -d -m 0700 -o postgres -g postgres "$dir"

    step_begin "postgres: initdb"
    # -A trust: any local connection is accepted without a password (test only).
    # --no-sync: don't fsync the fresh cluster; C.UTF-8 keeps the encoding
    # UTF8 even if the machine's locale is plain C/POSIX.
    as_user postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { show_log "$dir/initdb.log"; die "initdb failed"; }
    step_end

    step_begin "postgres: start on :$port"
    local opts="-p $port -k $dir -c listen_addresses=127.0.0.1"
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    opts+=" -c max_connections=200 -c timezone=UTC"
    as_user postgres "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 60 -o "$opts" -l "$dir/log" start >/dev/null ||
        { show_log "$dir/log"; die "postgres failed to start"; }
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "CREATE DATABASE $DB_NAME" >/dev/null
    step_end
}

start_mariadb() {
    local dir=$1 port=$2
    install -d -m 0750 -o mysql -g mysql "$dir" "$dir/data"

    step_begin "mariadb: install-db"
    mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" \
        --auth-root-authentication-method=normal --skip-test-db \
        >"$dir/install-db.log" 2>&1 ||
        { show_log "$dir/install-db.log"; die "mariadb-install-db failed"; }
    step_end

    step_begin "mariadb: start on :$port"
    # setsid + nohup: own session, immune to the caller's SIGHUP/Ctrl-C, so it
    # outlives this script; all fds point at the log so nothing waits on a pipe.
    # Durability is off (no binlog, no flush per commit, no doublewrite).
    setsid nohup "$MARIADBD" --no-defaults --user=mysql --datadir="$dir/data" \
        --port="$port" --bind-address=127.0.0.1 --socket="$dir/sock" \
        --pid-file="$dir/pid" --skip-log-bin --skip-name-resolve \
        --max-connections=300 --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci --default-time-zone=+00:00 \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
        </dev/null >>"$dir/log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/launch.pid"

    # Poll until the server answers (mariadb-admin ping succeeds even when the
    # login itself is refused, so this only tests liveness).
    local i ok=0
    for ((i = 0; i < 300; i++)); do
        if mariadb-admin --no-defaults --socket="$dir/sock" -uroot ping >/dev/null 2>&1; then
            ok=1
            break
        fi
        pid_is "$pid" mariadbd || break # died during startup
        sleep 0.1
    done
    [[ $ok -eq 1 ]] || { show_log "$dir/log"; die "mariadbd did not come up within 30s"; }
    step_end

    step_begin "mariadb: create db + user"
    # Connect over the unix socket as root (empty password, created by
    # install-db). Drop anonymous ''@... accounts (they would shadow
    # '${MY_USER}'@'%' for local connections) and root@<hostname> (useless and
    # only produces warnings under --skip-name-resolve). Then create a password
    # user that may do anything, including CREATE/DROP DATABASE for per-test
    # isolation.
    mariadb --no-defaults --socket="$dir/sock" -uroot <<SQL
DELETE FROM mysql.global_priv
 WHERE User = '' OR Host NOT IN ('localhost', '127.0.0.1', '::1', '%');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
CREATE USER '$MY_USER'@'%' IDENTIFIED BY '$MY_PASS';
CREATE USER '$MY_USER'@'localhost' IDENTIFIED BY '$MY_PASS';
CREATE USER '$MY_USER'@'127.0.0.1' IDENTIFIED BY '$MY_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$MY_USER'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$MY_USER'@'localhost' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$MY_USER'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    # Verify the exact path the tests use: TCP to 127.0.0.1 with the password.
    mariadb --no-defaults -h 127.0.0.1 -P "$port" -u"$MY_USER" -p"$MY_PASS" "$DB_NAME" \
        -e 'SELECT 1' >/dev/null || die "cannot log in as $MY_USER over TCP"
    step_end
}

cmd_start() {
    [[ $EUID -eq 0 ]] || die "start must run as root (it runs the servers as users postgres/mysql)"
    local t0
    t0=$(now_ms)

    ensure_packages

    # Tear down any previous run (idempotent restart with clean databases).
    cmd_stop

    mkdir -p "$STATE_DIR"
    local rundir
    rundir="$(mktemp -d /tmp/lapse-testbed.XXXXXX)"
    chmod 0755 "$rundir" # the server users must traverse it
    echo "$rundir" >"$STATE_DIR/rundir"
    ln -s "$rundir/pg" "$STATE_DIR/pg"
    ln -s "$rundir/mysql" "$STATE_DIR/mysql"

    local pg_port my_port
    pg_port="$(pick_port "$PG_PORT_BASE")"
    start_pg "$rundir/pg" "$pg_port"
    my_port="$(pick_port "$MY_PORT_BASE")"
    start_mariadb "$rundir/mysql" "$my_port"

    step_begin "s3: moto_server (scripts/moto.sh)"
    local s3_port
    s3_port="$(pick_port 55000)"
    "$REPO_ROOT/scripts/moto.sh" start "$rundir/s3" "$s3_port" || die "moto_server failed to start"
    step_end

    # The second S3 server: Ceph's RADOS Gateway, which differs from S3 where moto does not.
    local rgw_port=""
    if [[ "${LAPSE_TESTBED_RGW:-1}" != 0 ]]; then
        step_begin "s3: Ceph RGW (scripts/radosgw.sh)"
        rgw_port="$(pick_port 57000)"
        # Once more if it fails: its start failed once in many here (a step of the monitor's
        # or the OSD's start, on a busy machine); radosgw.sh says which step.
        RGW_ACCESS_KEY=test RGW_SECRET_KEY=test "$REPO_ROOT/scripts/radosgw.sh" start "$rundir/rgw" "$rgw_port" \
            || { log "radosgw failed to start; once more"; rgw_port="$(pick_port 57000)"
                 RGW_ACCESS_KEY=test RGW_SECRET_KEY=test "$REPO_ROOT/scripts/radosgw.sh" start "$rundir/rgw" "$rgw_port"; } \
            || die "radosgw failed to start"
        step_end
    fi

    step_begin "helm: scripts/helm.sh"
    local helm_bin
    helm_bin="$("$REPO_ROOT/scripts/helm.sh")" || die "scripts/helm.sh failed: no helm for the chart tests"
    step_end

    # Written last, so its presence means "the servers are up".
    cat >"$ENV_FILE.tmp" <<EOF
# Generated by scripts/testbed.sh start — throwaway test servers.
export LAPSE_TEST_PG_BIN='$PG_BIN'
export LAPSE_TEST_PG_URL='postgres://postgres@127.0.0.1:$pg_port/$DB_NAME'
export LAPSE_TEST_PG_ADMIN_URL='postgres://postgres@127.0.0.1:$pg_port/postgres'
export LAPSE_TEST_MYSQL_URL='mysql://$MY_USER:$MY_PASS@127.0.0.1:$my_port/$DB_NAME'
export LAPSE_TEST_MYSQL_ADMIN_URL='mysql://$MY_USER:$MY_PASS@127.0.0.1:$my_port/mysql'
export LAPSE_TEST_HELM='$helm_bin'
export LAPSE_TEST_S3_ENDPOINT='http://127.0.0.1:$s3_port'
EOF
    if [[ -n "$rgw_port" ]]; then
        echo "export LAPSE_TEST_RGW_ENDPOINT='http://127.0.0.1:$rgw_port'" >>"$ENV_FILE.tmp"
    fi
    mv "$ENV_FILE.tmp" "$ENV_FILE"

    local ms=$(($(now_ms) - t0))
    log "$(printf 'testbed ready in %d.%03ds' $((ms / 1000)) $((ms % 1000)))"
    log "logs: $STATE_DIR/pg/log, $STATE_DIR/mysql/log"
    log "source $ENV_FILE  (or: eval \"\$(scripts/testbed.sh env)\")"
    sed -n 's/^export /[testbed]   /p' "$ENV_FILE" >&2
}

cmd_env() {
    [[ -f "$ENV_FILE" ]] || die "testbed not running (no $ENV_FILE); run: scripts/testbed.sh start"
    grep '^export ' "$ENV_FILE"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
*)
    echo "usage: $0 {start|stop|env}" >&2
    exit 2
    ;;
esac
