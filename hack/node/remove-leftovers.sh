#!/usr/bin/env bash
# What a killed test run can leave on the host that reaches beyond the test
# node: the stand-in internet's network namespace and veth
# (devenv/codex_devenv/stand_in_internet.py), whose route would stay in the
# host's table. `make deps` runs this first, before anything downloads.
# Idempotent; needs root only when there is something to remove.
set -uo pipefail
netns=codex-inet host_if=cxinet0
if ip netns list 2>/dev/null | grep -qw "$netns"; then
  for pid in $(ip netns pids "$netns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns delete "$netns" && echo "[leftovers] removed network namespace $netns" >&2
fi
if ip link show "$host_if" >/dev/null 2>&1; then
  ip link delete "$host_if" && echo "[leftovers] removed link $host_if" >&2
fi
exit 0
