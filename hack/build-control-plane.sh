#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) from the Go module proxy, once per pinned version,
# into a cache outside the checkout -- the way controller-runtime's envtest
# keeps its assets. A second run finds every binary and builds nothing.
#
# Usage: hack/build-control-plane.sh            build what is missing, print the bin dir
#        hack/build-control-plane.sh --print-dir print the bin dir only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}
bin_dir="$cache_root/control-plane/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
if [[ "${1:-}" == "--print-dir" ]]; then echo "$bin_dir"; exit 0; fi

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl ${EXTRA_K8S_BINARIES:-})
missing_k8s=()
for b in "${k8s_bins[@]}"; do [[ -x "$bin_dir/$b" ]] || missing_k8s+=("$b"); done
need_etcd=0; [[ -x "$bin_dir/etcd" ]] || need_etcd=1

log() { echo "[control-plane] $*" >&2; }
if [[ ${#missing_k8s[@]} -eq 0 && $need_etcd -eq 0 ]]; then
  log "cache hit: $bin_dir (kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION); nothing to build"
  echo "$bin_dir"; exit 0
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$bin_dir"
start=$(date +%s)
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A wrapper module: require the upstream module and point every local replace
# (k8s staging/, etcd ../api ...) at the published module of the same release.
wrapper() { # dir module version staged_version
  local dir=$1 mod=$2 ver=$3 staged=$4 modfile
  mkdir -p "$dir"
  modfile=$(cd "$dir" && go mod download -json "$mod@$ver" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module codexbuild/$(basename "$dir")"
    echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
    echo "require $mod $ver"
    # etcd also replaces modules it forbids with ./FORBIDDEN_DEPENDENCY: not ours to map.
    grep -v FORBIDDEN_DEPENDENCY "$modfile" |
      sed -n 's#^[[:space:]]*\(replace[[:space:]]\)\{0,1\}\([^[:space:]]*\) => \.\{1,2\}/[^[:space:]]*$#replace \2 => \2 '"$staged"'#p'
  } > "$dir/go.mod"
}

if [[ ${#missing_k8s[@]} -gt 0 ]]; then
  log "building ${missing_k8s[*]} $KUBERNETES_VERSION (cold: about 6 minutes on 2 cores)"
  wrapper "$work/k8s" k8s.io/kubernetes "$KUBERNETES_VERSION" "v0.${KUBERNETES_VERSION#v1.}"
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for kv in "gitVersion=$KUBERNETES_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
            "gitCommit=0000000000000000000000000000000000000000" "buildDate=1970-01-01T00:00:00Z"; do
    ldflags+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  pkgs=(); for b in "${missing_k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$work/out/" "${pkgs[@]}")
  for b in "${missing_k8s[@]}"; do mv "$work/out/$b" "$bin_dir/$b"; done
fi

if [[ $need_etcd -eq 1 ]]; then
  log "building etcd $ETCD_VERSION"
  wrapper "$work/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
  (cd "$work/etcd" && go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=pinned" \
      -o "$bin_dir/etcd" go.etcd.io/etcd/server/v3)
fi

log "built into $bin_dir in $(( $(date +%s) - start ))s"
echo "$bin_dir"
