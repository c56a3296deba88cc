"""The contract between the runner and the operator.

The runner holds no Kubernetes credentials: it reports by printing Codex's
JSONL events to stdout and ending with one framed result line, and by writing
a bounded copy of that frame to the container's termination message. The
operator reads the frame from the pod log, or from the termination message
when the log is gone, and turns it into CodexSession status.
"""

from __future__ import annotations

import json
from typing import Any, Literal

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
EXIT_NETWORK_UNFENCED = 77  # EX_NOPERM: the pod's NetworkPolicy was not in force

RunnerOutcome = Literal[
    "completed",
    "turn_failed",
    "config_error",
    "codex_missing",
    "internal_error",
    "network_unfenced",
    "budget_exceeded",
]

# How the model proxy words a refusal for a spent budget (HTTP 402); Codex
# ends the turn with "unexpected status 402 Payment Required: <this>: ...",
# which the runner reports as the outcome budget_exceeded.
BUDGET_EXCEEDED = "budget exceeded"


def is_budget_refusal(error: str) -> bool:
    return "402" in error and f"{BUDGET_EXCEEDED}:" in error


# A wall-bounce run's answer as kept in the frame (the chosen one is the result's final_message).
MAX_RUN_MESSAGE = 4000


class ProviderRun(BaseModel):
    """One provider's run within a wall-bounce turn."""

    model_config = ConfigDict(extra="ignore")

    provider: str = Field(max_length=64)
    model: str | None = Field(default=None, max_length=128)
    outcome: RunnerOutcome
    final_message: str | None = None  # clipped by the runner to MAX_RUN_MESSAGE characters
    usage: Usage = Field(default_factory=Usage)
    errors: list[str] = Field(default_factory=list, max_length=10)
    duration_seconds: float | None = Field(default=None, ge=0)


class WallBounceOutcome(BaseModel):
    """What a wall-bounce turn (one prompt, several providers, compared) produced."""

    model_config = ConfigDict(extra="ignore")

    providers_used: list[str] = Field(default_factory=list, max_length=8)  # providers whose run completed
    consensus_score: float | None = Field(default=None, ge=0, le=1)  # mean pairwise similarity
    confidence_score: float | None = Field(default=None, ge=0, le=1)  # the chosen answer's mean similarity
    chosen_provider: str | None = None
    min_providers: int
    quality_threshold: float
    runs: list[ProviderRun] = Field(default_factory=list, max_length=8)


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
    wall_bounce: WallBounceOutcome | None = Field(
        default=None, description="Set for a wall-bounce turn; usage is then the sum over its runs."
    )

    def frame(self) -> str:
        return FRAME_PREFIX + self.model_dump_json(exclude_none=True)

    def bounded_frame(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The frame shortened to fit a termination message: long text goes first.

        First the wall-bounce runs' answers (their usage and outcome stay),
        then the errors are clipped and the final message shortened to fit;
        only if that is not enough, the runs' errors, then the runs, then the
        wall-bounce summary and finally the errors go.
        """
        text = self.frame()
        if len(text.encode()) <= limit:
            return text
        if self.wall_bounce is not None and any(r.final_message is not None for r in self.wall_bounce.runs):
            wall_bounce = self._slim_wall_bounce(final_messages=False)
            text = self.model_copy(update={"wall_bounce": wall_bounce, "truncated": True}).frame()
            if len(text.encode()) <= limit:
                return text
        slim = self.model_copy(
            update={
                "errors": [e[:200] for e in self.errors[:3]],
                "truncated": True,
                "wall_bounce": self._slim_wall_bounce(final_messages=False, run_errors=1),
            }
        )
        fallbacks: list[dict[str, Any]] = [
            {},
            {"wall_bounce": self._slim_wall_bounce(final_messages=False, run_errors=0)},
            {"wall_bounce": self._slim_wall_bounce(final_messages=False, run_errors=0, runs=False)},
            {"wall_bounce": None},
            {"wall_bounce": None, "errors": [e[:50] for e in self.errors[:1]]},
            {"wall_bounce": None, "errors": []},
        ]
        for fallback in fallbacks:
            slim = slim.model_copy(update=fallback)
            if len(slim.model_copy(update={"final_message": ""}).frame().encode()) <= limit:
                break
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

    def _slim_wall_bounce(
        self, *, final_messages: bool, run_errors: int | None = None, runs: bool = True
    ) -> WallBounceOutcome | None:
        if self.wall_bounce is None:
            return None
        kept = [
            r.model_copy(
                update={
                    "final_message": r.final_message if final_messages else None,
                    "errors": r.errors if run_errors is None else [e[:200] for e in r.errors[:run_errors]],
                }
            )
            for r in self.wall_bounce.runs
        ]
        return self.wall_bounce.model_copy(update={"runs": kept if runs else []})


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
