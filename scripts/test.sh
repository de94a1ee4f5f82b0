#!/usr/bin/env bash
# scripts/test.sh — the one command that runs lapse's whole test suite.
#
#   scripts/test.sh                 # testbed + fmt + clippy + all tests
#   scripts/test.sh some_filter     # extra args go to the test binaries
#                                   # (after `--`, e.g. a name filter, --nocapture)
#   SKIP_LINT=1 scripts/test.sh     # skip fmt/clippy (ignored when $CI is set)
#
# Phases:
#   1. scripts/testbed.sh start     throwaway PostgreSQL, MariaDB, moto, Ceph RGW, .testbed/env
#   2. cargo fmt --all -- --check
#   3. cargo clippy --all-targets -- -D warnings
#   4. cargo test --all-targets -- --test-threads=2 [ARGS...]
# The servers are always stopped on exit (success, failure or Ctrl-C), and the
# script exits with the status of the first failing phase (cargo's status).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

# rustup installs cargo into ~/.cargo/bin, which non-login shells may lack.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

phase() {
    printf '\n==================== %s ====================\n' "$*"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    phase "teardown: stopping test servers"
    scripts/testbed.sh stop || echo "warning: testbed stop failed" >&2
    exit "$rc"
}
trap cleanup EXIT
# Make Ctrl-C / SIGTERM go through the EXIT trap with the conventional status.
trap 'exit 130' INT
trap 'exit 143' TERM

phase "testbed: starting PostgreSQL, MariaDB, moto, Ceph RGW"
scripts/testbed.sh start
# shellcheck source=/dev/null
source .testbed/env

if [[ -z "${CI:-}" && "${SKIP_LINT:-0}" == 1 ]]; then
    phase "lint: skipped (SKIP_LINT=1)"
else
    phase "lint: cargo fmt --all -- --check"
    cargo fmt --all -- --check

    phase "lint: cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
fi

phase "test: cargo test --all-targets -- --test-threads=2 $*"
cargo test --all-targets -- --test-threads=2 "$@"

phase "all phases passed"
