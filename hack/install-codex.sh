#!/usr/bin/env bash
# Installs the pinned OpenAI Codex CLI (npm @openai/codex, CODEX_VERSION in
# hack/versions.env) into a cache outside the checkout, keyed by version, and
# prints the path of the native binary (the npm launcher is skipped: calling
# the binary directly saves ~55 ms per start). A second run installs nothing.
#
# Usage: hack/install-codex.sh             install if missing, print the binary path
#        hack/install-codex.sh --print-dir print the install dir only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
: "${CODEX_VERSION:?CODEX_VERSION is not set in hack/versions.env}"

cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}
dir="$cache_root/codex/$CODEX_VERSION"
if [[ "${1:-}" == "--print-dir" ]]; then echo "$dir"; exit 0; fi

log() { echo "[codex] $*" >&2; }

case "$(uname -m)" in
  x86_64 | amd64) triple=x86_64-unknown-linux-musl; platform=linux-x64 ;;
  aarch64 | arm64) triple=aarch64-unknown-linux-musl; platform=linux-arm64 ;;
  *) log "unsupported machine $(uname -m)"; exit 1 ;;
esac
# Where 0.171.0 puts it; find_binary falls back to a search if a release moves it.
rel="node_modules/@openai/codex-$platform/vendor/$triple/bin/codex"

find_binary() { # dir -> path of the native binary, or nothing
  if [[ -x "$1/$rel" ]]; then echo "$1/$rel"; return; fi
  find "$1/node_modules/@openai" -path "*/vendor/$triple/*" -type f -name codex -perm -u+x -print -quit 2>/dev/null
}

if [[ -f "$dir/.complete" ]] && bin=$(find_binary "$dir") && [[ -n "$bin" ]]; then
  log "cache hit: $dir (codex $CODEX_VERSION); nothing to install"
  echo "$bin"; exit 0
fi

command -v npm >/dev/null || { log "npm is needed to install @openai/codex"; exit 1; }
mkdir -p "$cache_root/codex"
start=$(date +%s)
# Install beside the target and rename into place, so a concurrent or
# interrupted run never leaves a half-populated version directory behind.
work=$(mktemp -d "$cache_root/codex/.install.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
log "installing @openai/codex@$CODEX_VERSION into $dir"
npm install --prefix "$work" --no-audit --no-fund --no-save --loglevel=error \
  "@openai/codex@$CODEX_VERSION" >&2
bin=$(find_binary "$work")
[[ -n "$bin" ]] || { log "no native codex binary for $platform in @openai/codex@$CODEX_VERSION"; exit 1; }
got=$("$bin" --version 2>/dev/null || true)
[[ "$got" == *"$CODEX_VERSION"* ]] || { log "binary reports '$got', expected $CODEX_VERSION"; exit 1; }
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
log "installed codex $CODEX_VERSION into $dir in $(( $(date +%s) - start ))s"
find_binary "$dir"
