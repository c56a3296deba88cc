"""Keeping the model's commands away from the agent and the app-server.

Inside a live runner pod the agent, Codex's app-server and every command the
model runs share one uid. Same-uid processes may open each other's
`/proc/<pid>/fd/*` (a pipe's write end included), read `/proc/<pid>/environ`
and ptrace each other, unless the target is non-dumpable. So:

- the agent makes itself non-dumpable at start (`PR_SET_DUMPABLE` 0): a
  command cannot open the agent's end of the app-server's stdin and write
  JSON-RPC into it (a turn of its own, an answer to an approval);
- Codex is installed executable but not readable by the runner's uid
  (runner/Dockerfile): the kernel starts such a binary non-dumpable, so the
  app-server's own descriptors are closed to its children too.

A prctl setting ends at execve, which is why the binary's mode, not the
agent's prctl, covers the app-server. Measured in
tests/integration/test_e2e_live_conversation.py on the real node.
"""

from __future__ import annotations

import ctypes
import os

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.prctl(option, arg, 0, 0, 0))
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def make_non_dumpable() -> None:
    """This process: no core dumps, no ptrace, no /proc/<pid>/fd for its own uid."""
    _prctl(PR_SET_DUMPABLE, 0)


def dumpable() -> bool:
    return _prctl(PR_GET_DUMPABLE) != 0


def starts_non_dumpable(binary: str) -> bool:
    """Whether the kernel starts `binary` non-dumpable for this uid: it may
    execute it but not read it (root reads everything)."""
    return os.geteuid() != 0 and os.access(binary, os.X_OK) and not os.access(binary, os.R_OK)
