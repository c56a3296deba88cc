#!/usr/bin/env bash
# Builds CoreDNS (COREDNS_VERSION in hack/versions.env; the test node's cluster
# DNS, devenv/codex_devenv/cluster_network.py) from its Go module, once per
# version, into the cache outside the checkout -- like hack/build-helm.sh.
# A second run finds the binary and builds nothing.
#
# Usage: hack/build-coredns.sh               build it if missing, print the binary's path
#        hack/build-coredns.sh --print-path  print the binary's path only
#
# A minimal build, the way CoreDNS documents custom builds without editing
# plugin.cfg: a wrapper main that imports only the plugins a cluster resolver
# needs, so the build pulls in no cloud SDKs (route53, azure, clouddns ...).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

# shellcheck source=hack/lib/cached-build.sh
source "$here/lib/cached-build.sh"
cached_build_begin coredns "$cache_root/node/coredns-$COREDNS_VERSION/coredns" "coredns $COREDNS_VERSION" "$@"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
log "building coredns $COREDNS_VERSION from the Go module proxy (cold: about 1.5 minutes on 2 cores)"
# bind is here because the harness's Corefile pins CoreDNS to the bridge
# address. The list is in plugin.cfg's order: setting Directives replaces
# CoreDNS's generated list, and that order decides which plugin sees a query
# first, so it is not ours to choose.
plugins=(bind ready health errors log cache hosts kubernetes)
imports=$(printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "${plugins[@]}")
directives=$(printf '"%s", ' "${plugins[@]}")
cat > "$work/main.go" <<GO
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
$imports
)

func init() { dnsserver.Directives = []string{${directives%, }} }

func main() { coremain.Run() }
GO
# go.sum comes from tidy; CoreDNS's own go.mod (via MVS) decides every version.
(cd "$work" && go mod init codexbuild/coredns 2>/dev/null \
  && go get "github.com/coredns/coredns@$COREDNS_VERSION" && go mod tidy \
  && go build -trimpath -ldflags "-s -w" -o "$work/coredns" .) >&2
"$work/coredns" -version >/dev/null
cached_build_finish "$work/coredns"
