#!/usr/bin/env bash
# A random password for the in-cluster Redis, for kustomize installs: the kind
# overlay turns the file into the Secret codex-redis-auth (key `password`).
# (The chart generates its own; see its values redis.auth.) `make kind-certs`
# also makes the model proxy's signing key with it
# (manifests/overlays/kind/model-proxy/signing-key: the Secret
# codex-model-proxy-signing-key; the chart's is modelProxy.signingKey).
#
# Usage: hack/redis-password.sh [OUT_FILE]
#        default OUT_FILE manifests/overlays/kind/redis-auth/password
# 48 hex digits, no trailing newline (kustomize puts the file's bytes into the
# Secret as they are); keeps an existing file (delete it to rotate, then
# restart Redis and the gateway, or the operator and the model proxy).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/manifests/overlays/kind/redis-auth/password}

if [[ -s "$out" ]]; then
  echo "[redis-password] $out exists; nothing to do" >&2
  exit 0
fi
mkdir -p "$(dirname "$out")"
umask 077
password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
[[ ${#password} -eq 48 ]] || { echo "[redis-password] could not read /dev/urandom" >&2; exit 1; }
printf '%s' "$password" >"$out.tmp"
mv "$out.tmp" "$out"
echo "[redis-password] wrote $out" >&2
