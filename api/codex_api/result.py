"""The contract between the runner and the operator.

The runner holds no Kubernetes credentials: it reports by printing Codex's
JSONL events to stdout and ending with one framed result line, and by writing
a bounded copy of that frame to the container's termination message. The
operator reads the frame from the pod log, or from the termination message
when the log is gone, and turns it into CodexSession status.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .session import MAX_RESPONSE, Usage

FRAME_PREFIX = "::codex-result::"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# The kubelet keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096

# Exit codes of the runner (sysexits-style, distinct from Codex's own 0/1/2).
EXIT_COMPLETED = 0
EXIT_TURN_FAILED = 1
EXIT_CONFIG_ERROR = 78  # EX_CONFIG
EXIT_CODEX_MISSING = 69  # EX_UNAVAILABLE
EXIT_INTERNAL = 70  # EX_SOFTWARE

RunnerOutcome = Literal["completed", "turn_failed", "config_error", "codex_missing", "internal_error"]


class RunnerResult(BaseModel):
    """What one turn produced, as the runner reports it."""

    model_config = ConfigDict(extra="ignore")

    outcome: RunnerOutcome
    thread_id: str | None = Field(default=None, max_length=128)
    final_message: str | None = None
    usage: Usage = Field(default_factory=Usage, description="Usage of this turn (not cumulative).")
    commands: int = Field(default=0, ge=0)
    file_changes: int = Field(default=0, ge=0)
    errors: list[str] = Field(default_factory=list, max_length=10)
    exit_code: int = 0
    duration_seconds: float | None = Field(default=None, ge=0)
    truncated: bool = False

    def frame(self) -> str:
        return FRAME_PREFIX + self.model_dump_json(exclude_none=True)

    def bounded_frame(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The frame shortened to fit a termination message: long text goes first."""
        text = self.frame()
        if len(text.encode()) <= limit:
            return text
        slim = self.model_copy(update={"errors": [e[:200] for e in self.errors[:3]], "truncated": True})
        budget = limit - len(slim.model_copy(update={"final_message": ""}).frame().encode()) - 16
        message = (self.final_message or "").encode()[: max(budget, 0)].decode(errors="ignore")

        # JSON escaping (quotes, newlines, control characters) can make the encoded
        # message longer than its UTF-8 bytes: keep the longest prefix that fits.
        def fits(n: int) -> bool:
            return len(slim.model_copy(update={"final_message": message[:n]}).frame().encode()) <= limit

        low, high = 0, len(message)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return slim.model_copy(update={"final_message": message[:low]}).frame()


def parse_frame(text: str) -> RunnerResult | None:
    """The last well-formed result frame in a log or termination message, if any."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith(FRAME_PREFIX):
            continue
        try:
            return RunnerResult.model_validate(json.loads(line[len(FRAME_PREFIX) :]))
        except (ValueError, ValidationError):
            continue
    return None


def clip_response(message: str | None) -> tuple[str | None, bool]:
    """A final message bounded to what CodexSession status may hold."""
    if message is None or len(message) <= MAX_RESPONSE:
        return message, False
    return message[: MAX_RESPONSE - 1] + "…", True
