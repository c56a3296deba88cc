#!/usr/bin/env bash
# The warm runners' signing key for kustomize installs: an Ed25519 private key
# in PEM; the kind overlay turns the file into the Secret
# codex-agent-signing-key (key `private.pem`), which the operator mounts to
# sign the turns it hands to live runner pods. (The chart generates its own;
# see its values warmRunners.signingKey.)
#
# Usage: hack/agent-key.sh [OUT_FILE]
#        default OUT_FILE manifests/overlays/kind/agent-key/private.pem
# Keeps an existing file (delete it to rotate, then restart the operator: live
# pods started with the old key end at their next turn).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/manifests/overlays/kind/agent-key/private.pem}

if [[ -s "$out" ]]; then
  echo "[agent-key] $out exists; nothing to do" >&2
  exit 0
fi
mkdir -p "$(dirname "$out")"
umask 077
openssl genpkey -algorithm ed25519 -out "$out.tmp"
mv "$out.tmp" "$out"
echo "[agent-key] wrote $out" >&2
