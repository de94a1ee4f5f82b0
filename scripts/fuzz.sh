#!/usr/bin/env bash
# scripts/fuzz.sh [seconds] — fuzz the policy parser for a while (default 60 s).
# FUZZ_TARGET=config_holds fuzzes the worker-config and holds-file loaders instead.
#
# Installs cargo-fuzz (and the nightly toolchain it needs) when missing, seeds the fuzzer with
# every policy file of the bad-input corpus (tests/corpus) and of examples/, then runs the
# `policy` target of fuzz/ (arbitrary bytes -> lapse::policy::load_bytes + check_set) for the
# given time. A crash (panic, timeout, out of memory) stops it with a non-zero exit; the input
# is saved in fuzz/artifacts/<target>/ — add it to tests/corpus as a case once fixed.
#
# Environment: FUZZ_TARGET (policy | config_holds), FUZZ_JOBS (parallel workers, default 1),
# FUZZ_TARGET_DIR (default fuzz/target).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_TO_RUN="${1:-60}"
JOBS="${FUZZ_JOBS:-1}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$REPO_ROOT/fuzz/target}"
TARGET="${FUZZ_TARGET:-policy}"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Seeds: a scratch copy, so the fuzzer's own discoveries do not land in the repository.
SEEDS="$REPO_ROOT/fuzz/corpus/$TARGET"
mkdir -p "$SEEDS"
case "$TARGET" in
  policy) SEED_FILES=(-path '*/policies/*') ;;
  config_holds) SEED_FILES=(\( -name lapse.yaml -o -name holds.yaml \)) ;;
  *) echo "unknown FUZZ_TARGET '$TARGET' (policy | config_holds)" >&2; exit 2 ;;
esac
find "$REPO_ROOT/tests/corpus" "$REPO_ROOT/examples" "${SEED_FILES[@]}" -type f -size -64k -print0 |
  while IFS= read -r -d '' f; do
    cp "$f" "$SEEDS/seed-$(sha256sum "$f" | cut -c1-16)"
  done
echo "fuzz: $(find "$SEEDS" -type f | wc -l) inputs in $SEEDS; running ${SECONDS_TO_RUN}s with $JOBS job(s)"

cd "$REPO_ROOT/fuzz"
# -rss_limit_mb: a policy file must never need more than 1 GiB (alias bombs, deep nesting);
# -timeout: nor more than 10 s.
PARALLEL=()
if [ "$JOBS" -gt 1 ]; then PARALLEL=(-jobs="$JOBS" -workers="$JOBS"); fi
cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$TARGET" "$SEEDS" -- \
  -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=1024 -timeout=10 -max_len=65536 \
  -print_final_stats=1 "${PARALLEL[@]}"
