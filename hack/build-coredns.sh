#!/usr/bin/env bash
# Builds CoreDNS (the test node's cluster DNS, devenv/codex_devenv/cluster_network.py)
# from its Go module, once per pinned version, into the cache outside the checkout.
# A minimal build, the way CoreDNS documents custom builds: a wrapper main that
# imports only the plugins a cluster resolver needs, so the build pulls in no
# cloud SDKs and takes seconds instead of minutes.
#
# Usage: hack/build-coredns.sh               build if missing, print the binary's path
#        hack/build-coredns.sh --print-path  print the path only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}
out="$cache_root/node/coredns-$COREDNS_VERSION/coredns"
if [[ "${1:-}" == "--print-path" ]]; then echo "$out"; exit 0; fi

log() { echo "[coredns] $*" >&2; }
if [[ -x "$out" ]]; then log "cache hit: $out"; echo "$out"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Only these plugins, in CoreDNS's own directive order (plugin.cfg): the order
# decides which plugin sees a query first, so it is not ours to change.
plugins=(bind ready health errors log cache hosts kubernetes)
{
  echo "package main"
  echo
  echo "import ("
  echo '	"github.com/coredns/coredns/core/dnsserver"'
  echo '	"github.com/coredns/coredns/coremain"'
  for p in "${plugins[@]}"; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
  echo ")"
  echo
  printf 'func init() { dnsserver.Directives = []string{'
  for p in "${plugins[@]}"; do printf '"%s", ' "$p"; done
  echo '} }'
  echo
  echo "func main() { coremain.Run() }"
} > "$work/main.go"
(cd "$work" && go mod init codexbuild/coredns >/dev/null 2>&1 \
  && go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1 \
  && go mod tidy >/dev/null 2>&1 \
  && gofmt -w main.go \
  && go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
mv "$out.tmp" "$out"
log "built $out ($(du -h "$out" | cut -f1)) in $(( $(date +%s) - start ))s"
echo "$out"
