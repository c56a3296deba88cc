#!/usr/bin/env bash
# Builds the test node's NetworkPolicy engine: kube-router (KUBE_ROUTER_VERSION
# in hack/versions.env), of which the harness runs only the network-policy
# controller (devenv/codex_devenv/network_policy.py). From its Go module, once
# per version, into the cache outside the checkout -- like
# hack/build-coredns.sh. A second run finds the binary and builds nothing.
#
# Usage: hack/build-netpol.sh               build it if missing, print the binary's path
#        hack/build-netpol.sh --print-path  print the binary's path only
#
# `go install module@version`: kube-router's own go.mod and go.sum decide
# every dependency (it has no replace directives), version ldflags as its
# Makefile sets them. At run time it needs iptables, ipset (Debian's `ipset`
# package) and a kernel with ip_set and the xt `set` match.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

# shellcheck source=hack/lib/cached-build.sh
source "$here/lib/cached-build.sh"
cached_build_begin netpol "$cache_root/node/kube-router-$KUBE_ROUTER_VERSION/kube-router" \
  "kube-router $KUBE_ROUTER_VERSION" "$@"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
log "building kube-router $KUBE_ROUTER_VERSION from the Go module proxy (cold: about 1.5 minutes on 2 cores)"
pkg=github.com/cloudnativelabs/kube-router/v2
GOBIN="$work" go install -trimpath \
  -ldflags "-s -w -X $pkg/pkg/version.Version=$KUBE_ROUTER_VERSION -X $pkg/pkg/version.BuildDate=module-proxy" \
  "$pkg/cmd/kube-router@$KUBE_ROUTER_VERSION" >&2
"$work/kube-router" --version >/dev/null
cached_build_finish "$work/kube-router"
