#!/usr/bin/env bash
# Builds helm (HELM_VERSION in hack/versions.env) from the Go module proxy,
# once per version, into a cache outside the checkout -- like
# hack/build-control-plane.sh. A second run finds the binary and builds nothing.
#
# Usage: hack/build-helm.sh              build it if missing, print the binary's path
#        hack/build-helm.sh --print-path print the binary's path only
#
# helm.sh/helm/v3's go.mod has no replace directives, so a plain
# `go install helm.sh/helm/v3/cmd/helm@VERSION` works. The ldflags are the
# ones helm's own Makefile sets: the version `helm version` reports, and the
# Kubernetes version helm assumes without a cluster (`helm template`, `helm
# lint`: the minor of the client-go it is built with; without it helm assumes
# 1.20 and the chart's kubeVersion >=1.30 would refuse to render).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

# shellcheck source=hack/lib/cached-build.sh
source "$here/lib/cached-build.sh"
cached_build_begin helm "$cache_root/helm/$HELM_VERSION/helm" "helm $HELM_VERSION" "$@"

export GOTOOLCHAIN=local CGO_ENABLED=0
unset GOFLAGS
log "building helm $HELM_VERSION from the Go module proxy (cold: about 2-3 minutes on 2 cores)"
modfile=$(cd "$work" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
client_go=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p;T;q' "$modfile")
[[ -n "$client_go" ]] || { log "cannot find k8s.io/client-go in $modfile"; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go"
done
# `go install pkg@version` builds in module mode with helm's own go.mod (and
# go.sum) deciding every dependency, exactly as a release build does.
GOBIN="$work" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$work/helm" version --short >/dev/null
cached_build_finish "$work/helm"
