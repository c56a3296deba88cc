#!/usr/bin/env bash
# A self-signed CA and a serving certificate for the operator's identity
# webhook (Service codex-operator-webhook), for kustomize installs: the kind
# overlay turns the files into the Secret codex-operator-webhook-tls and the
# webhook's caBundle. (The chart generates its own; see its values.)
#
# Usage: hack/webhook-cert.sh [OUT_DIR] [NAMESPACE] [DAYS]
#        default OUT_DIR manifests/overlays/kind/webhook-tls, NAMESPACE codex-system, DAYS 3650
# Writes OUT_DIR/{ca.crt,tls.crt,tls.key}; keeps existing files (delete them to renew).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/manifests/overlays/kind/webhook-tls}
ns=${2:-codex-system}
days=${3:-3650}
svc=codex-operator-webhook

if [[ -s "$out/ca.crt" && -s "$out/tls.crt" && -s "$out/tls.key" ]]; then
  echo "[webhook-cert] $out exists; nothing to do" >&2
  exit 0
fi
command -v openssl >/dev/null || { echo "[webhook-cert] needs openssl (make system-deps)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=codex-operator-webhook-ca" \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$svc.$ns.svc" \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
  "$svc" "$svc" "$ns" "$svc" "$ns" "$svc" "$ns" >"$work/ext.cnf"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days "$days" -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
cp "$work/ca.crt" "$work/tls.crt" "$work/tls.key" "$out/"
echo "[webhook-cert] wrote $out/{ca.crt,tls.crt,tls.key} for $svc.$ns.svc, valid $days days" >&2
