#!/usr/bin/env bash
# One-time host setup for the test node (devenv/codex_devenv/node.py): a real
# kubelet + containerd + runc on this machine. Idempotent: every step checks
# first, so re-running it changes nothing on a prepared host.
#
#   sudo hack/node/setup-host.sh           install packages, bridge, firewall, crictl
#   hack/node/setup-host.sh --check        report what is missing, change nothing
#
# What it does:
#   1. Debian packages: containerd, runc, CNI plugins, ipset (the NetworkPolicy
#      engine, hack/build-netpol.sh), a static busybox (the
#      test image's rootfs), gcc + libc6-dev (to build a static pause binary).
#      Debian's containerd *service* is not used: the harness starts its own
#      containerd with its own config, root and socket.
#   2. The pod bridge cxbr0 with 10.244.77.1/24 -- a private subnet on a
#      bridge we own. Pods get no default route (CNI isGateway=false) and a
#      FORWARD DROP rule keeps anything from the bridge off other interfaces;
#      no NAT anywhere. A port-less bridge cxnode0 with 10.244.78.1/32 for the
#      kubelet's node IP (kubelet refuses loopback; pods have no route to it).
#   3. crictl (sigs.k8s.io/cri-tools) from the Go module proxy into the cache,
#      used to tear pod sandboxes down cleanly (CNI included) on stop.
#   4. kubelet and kube-proxy, built into the control-plane cache by
#      EXTRA_K8S_BINARIES="kubelet kube-proxy" hack/build-control-plane.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/node/node.env
source "$here/node.env"

check_only=0; [[ "${1:-}" == "--check" ]] && check_only=1
log() { echo "[node-setup] $*" >&2; }
missing=0
need() { log "missing: $*"; missing=1; }
has_addr() { local out; out=$(ip -4 addr show dev "$1" 2>/dev/null) || return 1; [[ "$out" == *"inet $2 "* ]]; }

if [[ $check_only -eq 0 && $(id -u) -ne 0 ]]; then
  log "must run as root (it installs packages and creates a bridge)"; exit 1
fi

# 1. packages -----------------------------------------------------------------
pkgs=(containerd runc containernetworking-plugins busybox-static iptables ipset iproute2 gcc libc6-dev)
absent=()
for p in "${pkgs[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || absent+=("$p")
done
if [[ ${#absent[@]} -gt 0 ]]; then
  if [[ $check_only -eq 1 ]]; then need "packages ${absent[*]}"; else
    log "installing ${absent[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${absent[@]}" >&2
  fi
else
  log "packages present: ${pkgs[*]}"
fi

# Kernel bits (built in on some kernels, so failures are not fatal).
if [[ $check_only -eq 0 ]]; then modprobe overlay 2>/dev/null || true; modprobe br_netfilter 2>/dev/null || true; fi
grep -qw overlay /proc/filesystems || need "overlay filesystem (containerd's overlayfs snapshotter)"

# 2. bridge and firewall ----------------------------------------------------------
if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
  if [[ $check_only -eq 1 ]]; then need "bridge $NODE_BRIDGE"; else
    log "creating bridge $NODE_BRIDGE ($NODE_BRIDGE_ADDR)"
    ip link add "$NODE_BRIDGE" type bridge
  fi
fi
if [[ $check_only -eq 0 ]]; then
  # No `ip ... | grep -q` under pipefail: grep's early exit SIGPIPEs ip and the test "fails".
  has_addr "$NODE_BRIDGE" "$NODE_BRIDGE_ADDR" || ip addr add "$NODE_BRIDGE_ADDR" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
fi
# The kubelet's own address, on a port-less bridge (kubelet rejects a loopback node IP;
# this kernel has no dummy interfaces).
if ! ip link show "$NODE_HOST_IF" >/dev/null 2>&1; then
  if [[ $check_only -eq 1 ]]; then need "bridge $NODE_HOST_IF"; else
    log "creating port-less bridge $NODE_HOST_IF ($NODE_IP/32)"
    ip link add "$NODE_HOST_IF" type bridge
  fi
fi
if [[ $check_only -eq 0 ]]; then
  has_addr "$NODE_HOST_IF" "$NODE_IP/32" || ip addr add "$NODE_IP/32" dev "$NODE_HOST_IF"
  ip link set "$NODE_HOST_IF" up
fi
# A Service between two pods is DNATed by kube-proxy and routed back out of the
# bridge: forwarding on for packets that come in on the bridge only (IPv4
# forwarding is decided by the incoming interface), off for every other one.
if [[ $check_only -eq 0 ]]; then
  sysctl -qw "net.ipv4.conf.$NODE_BRIDGE.forwarding=1"
elif [[ "$(cat "/proc/sys/net/ipv4/conf/$NODE_BRIDGE/forwarding" 2>/dev/null)" != 1 ]]; then
  need "forwarding on $NODE_BRIDGE"
fi
# Nothing from the pod bridge may leave through another interface, whatever
# forwarding says; pod-to-pod traffic stays on the bridge (in == out).
fw_rule=(FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP)
fw_rule_in=(FORWARD ! -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -j DROP)
for r in fw_rule fw_rule_in; do
  declare -n rule=$r
  if ! iptables -C "${rule[@]}" 2>/dev/null; then
    if [[ $check_only -eq 1 ]]; then need "iptables rule ${rule[*]}"; else iptables -I "${rule[@]}"; fi
  fi
done

# 3. crictl -----------------------------------------------------------------------
cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}
crictl_dir="$cache_root/node/crictl-$CRICTL_VERSION"
if [[ ! -x "$crictl_dir/crictl" ]]; then
  if [[ $check_only -eq 1 ]]; then need "crictl $CRICTL_VERSION in $crictl_dir"; else
    log "building crictl $CRICTL_VERSION from the Go module proxy"
    mkdir -p "$crictl_dir"
    GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$crictl_dir" go install -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
      "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  fi
fi

# 4. kubelet ------------------------------------------------------------------------
if [[ $check_only -eq 1 ]]; then
  bin_dir=$(bash "$here/../build-control-plane.sh" --print-dir)
  for b in kubelet kube-proxy; do
    [[ -x "$bin_dir/$b" ]] || need "$b in $bin_dir (EXTRA_K8S_BINARIES='kubelet kube-proxy' hack/build-control-plane.sh)"
  done
else
  EXTRA_K8S_BINARIES="kubelet kube-proxy" bash "$here/../build-control-plane.sh" >/dev/null
fi

if [[ $missing -eq 1 ]]; then exit 1; fi
log "host ready for the test node (bridge $NODE_BRIDGE, subnet $NODE_SUBNET)"
