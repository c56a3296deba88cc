#!/usr/bin/env bash
# What a killed test run can leave on the host that reaches beyond the test
# node: the stand-in internet's network namespace and veth
# (devenv/codex_devenv/stand_in_internet.py), whose route would stay in the
# host's table. `make deps` runs this first, before anything downloads.
# A stand-in whose owner (the pid in $owner_file) still runs is live, not a
# leftover: `make dev` inside a running suite must not take it away.
# --force removes it regardless (its owner's own stop). Idempotent.
set -uo pipefail
netns=codex-inet host_if=cxinet0 owner_file=/run/codex-inet.owner
if [[ "${1:-}" != "--force" && -f "$owner_file" ]]; then
  owner=$(cat "$owner_file" 2>/dev/null)
  if [[ "$owner" =~ ^[0-9]+$ ]] && kill -0 "$owner" 2>/dev/null; then
    echo "[leftovers] $netns belongs to running pid $owner; left alone" >&2
    exit 0
  fi
fi
if ip netns list 2>/dev/null | grep -qw "$netns"; then
  for pid in $(ip netns pids "$netns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns delete "$netns" && echo "[leftovers] removed network namespace $netns" >&2
fi
if ip link show "$host_if" >/dev/null 2>&1; then
  ip link delete "$host_if" && echo "[leftovers] removed link $host_if" >&2
fi
rm -f "$owner_file"
exit 0
