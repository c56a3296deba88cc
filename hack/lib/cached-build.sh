# Shared by the hack/build-*.sh scripts that build one binary from the Go
# module proxy into the cache outside the checkout, once per version.
#
#   source "$here/lib/cached-build.sh"
#   cached_build_begin TAG OUT WHAT "$@"   # --print-path / cache hit: prints OUT and exits;
#                                           # else sets $work (a temp dir) and $cache_root
#   ... build "$work/<name>" ...
#   cached_build_finish "$work/<name>"     # moves it to OUT, logs the time, prints OUT
#
# log MESSAGE prints "[TAG] MESSAGE" on stderr; stdout carries only the path.

cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}

cached_build_begin() {
  _cb_tag=$1 _cb_out=$2 _cb_what=$3
  shift 3
  if [[ "${1:-}" == "--print-path" ]]; then echo "$_cb_out"; exit 0; fi
  if [[ -x "$_cb_out" ]]; then
    log "cache hit: $_cb_out ($_cb_what); nothing to build"
    echo "$_cb_out"; exit 0
  fi
  mkdir -p "$(dirname "$_cb_out")"
  _cb_start=$(date +%s)
  work=$(mktemp -d "$cache_root/build-$_cb_tag.XXXXXX")
  # shellcheck disable=SC2064  # expand now: $work is fixed from here on
  trap "rm -rf '$work'" EXIT
}

cached_build_finish() {
  mv "$1" "$_cb_out"
  log "built $_cb_out ($(du -h "$_cb_out" | cut -f1)) in $(( $(date +%s) - _cb_start ))s"
  echo "$_cb_out"
}

log() { echo "[${_cb_tag:-build}] $*" >&2; }
