"""What a long-lived in-memory copy of a Kubernetes object keeps: the operator's
store and the gateway's session cache hold thousands of them.

`slim` drops what no reader needs: `metadata.managedFields` (about half of a
session's JSON), `kubectl apply`'s last-applied annotation (a copy of the
spec), and of a pod all of its spec but what `POD_SPEC_READ` names.
`compact` interns keys and short strings: the JSON decoder makes new key
strings for every object ("metadata", "lastTransitionTime", ...) and new
copies of every repeated value (the namespace, "True", a phase, a reason),
so thousands of objects then share one copy of each. docs/benchmarks.md
(P5) has what both save with 5,000 sessions.

`Packer` goes further for a holder that reads few of its objects per request
(the gateway's session cache): each object as zlib-compressed JSON with a
preset dictionary, about 110 bytes for a session instead of 2.7 kB of dicts.
"""

from __future__ import annotations

import json
import sys
import zlib
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
POD_SPEC_READ = ("restartPolicy",)
# Longer strings (prompts, responses, messages) are rarely shared: kept as they are.
INTERN_MAX = 64


def compact(value: Any) -> Any:
    """A copy of a JSON value with its keys and short strings interned."""
    if isinstance(value, dict):
        return {sys.intern(k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= INTERN_MAX:
        return sys.intern(value)
    return value


def slim(
    obj: dict[str, Any],
    *,
    keep_managed_fields: bool = False,
    pod: bool = False,
    unread_status: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`obj` without what no reader needs (a new dict; `obj` is not changed);
    `unread_status` names status fields this holder never reads."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    drop_fields = not keep_managed_fields and "managedFields" in meta
    status = obj.get("status")
    drop_status = isinstance(status, dict) and any(k in status for k in unread_status)
    if not (drop_fields or LAST_APPLIED in annotations or pod or drop_status):
        return obj
    meta = {k: v for k, v in meta.items() if not (drop_fields and k == "managedFields")}
    if LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    out = {**obj, "metadata": meta}
    if drop_status:
        assert isinstance(status, dict)
        out["status"] = {k: v for k, v in status.items() if k not in unread_status}
    if pod:
        spec = obj.get("spec") or {}
        out["spec"] = {k: spec[k] for k in POD_SPEC_READ if k in spec}
    return out


def keep(
    obj: dict[str, Any],
    *,
    keep_managed_fields: bool = False,
    pod: bool = False,
    unread_status: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What to hold of `obj` in memory for long: slim, then compact."""
    return compact(slim(obj, keep_managed_fields=keep_managed_fields, pod=pod, unread_status=unread_status))


class Packer:
    """Objects held as compressed JSON bytes. Sessions of one installation are
    near copies of each other (the same keys, labels, phases, reasons), so the
    first object packed becomes zlib's preset dictionary and every later one
    is mostly back-references to it: ~110 bytes where plain zlib gives ~600
    and the decoded dicts 2.7 kB. Unpacking (~50 µs for a session) returns a
    new dict each time, so a reader cannot change what is held."""

    LEVEL = 6

    def __init__(self) -> None:
        self._zdict: bytes | None = None

    def pack(self, obj: dict[str, Any]) -> bytes:
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        if self._zdict is None:
            # zlib reads at most the last 32 KiB of a dictionary.
            self._zdict = raw[-32768:]
        packer = zlib.compressobj(self.LEVEL, zdict=self._zdict)
        return packer.compress(raw) + packer.flush()

    def unpack(self, blob: bytes) -> dict[str, Any]:
        assert self._zdict is not None, "unpack before any pack"
        unpacker = zlib.decompressobj(zdict=self._zdict)
        value = json.loads(unpacker.decompress(blob) + unpacker.flush())
        assert isinstance(value, dict)
        return value
