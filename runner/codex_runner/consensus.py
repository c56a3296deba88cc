"""Wall-bounce: compare the answers of several providers and pick one. Pure.

Agreement is textual similarity: both answers are normalized (casefolded,
whitespace collapsed, stripped), cut to their first MAX_COMPARED characters
and compared with difflib's SequenceMatcher ratio over their tokens (words
and single punctuation characters). Tokens rather than characters because
at character level every letter of a text longer than 200 characters is
"popular", so autojunk makes two near-identical answers score about 0, and
without autojunk one pair of 8000-character answers takes seconds.

`wall_bounce_result` turns the runs of a wall-bounce turn into the turn's
RunnerResult (outcome, summed usage, the chosen answer, the WallBounceOutcome).
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence

from codex_api.result import (
    EXIT_COMPLETED,
    EXIT_TURN_FAILED,
    MAX_RUN_MESSAGE,
    ProviderRun,
    RunnerResult,
    WallBounceOutcome,
)
from codex_api.session import Usage

from .contract import WallBounceProvider, WallBounceSettings

MAX_COMPARED = 8000
MAX_ERRORS = 10
_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def similarity(a: str, b: str) -> float:
    """How alike two answers are, 0..1: identical (after normalizing) is 1.0, one empty is 0.0.

    Symmetric: similarity(a, b) == similarity(b, a).
    """
    a, b = normalize(a)[:MAX_COMPARED], normalize(b)[:MAX_COMPARED]
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    first, second = sorted((a, b))  # SequenceMatcher's ratio depends a little on the order
    matcher = difflib.SequenceMatcher(None, _TOKEN.findall(first), _TOKEN.findall(second), autojunk=False)
    return min(max(matcher.ratio(), 0.0), 1.0)


def _score(value: float) -> float:
    return min(max(round(value, 4), 0.0), 1.0)


def score(answers: dict[str, str]) -> tuple[float | None, str | None, float | None]:
    """(consensus, chosen provider, confidence) of the answers, in provider order.

    consensus: the mean pairwise similarity; chosen: the answer with the
    highest mean similarity to the others (ties: the earlier provider);
    confidence: that mean. One answer: (None, that provider, None); none:
    (None, None, None). Scores are rounded to 4 decimals.
    """
    names = list(answers)
    if not names:
        return None, None, None
    if len(names) == 1:
        return None, names[0], None
    pair: dict[tuple[int, int], float] = {}
    for i, j in itertools.combinations(range(len(names)), 2):
        pair[i, j] = pair[j, i] = similarity(answers[names[i]], answers[names[j]])
    consensus = sum(pair[i, j] for i, j in itertools.combinations(range(len(names)), 2)) / (
        len(names) * (len(names) - 1) / 2
    )
    means = [
        sum(pair[i, j] for j in range(len(names)) if j != i) / (len(names) - 1) for i in range(len(names))
    ]
    best = max(range(len(names)), key=lambda i: (means[i], -i))
    return _score(consensus), names[best], _score(means[best])


def clip_message(message: str | None) -> str | None:
    """A run's answer as kept in the frame: at most MAX_RUN_MESSAGE characters."""
    if message is None or len(message) <= MAX_RUN_MESSAGE:
        return message
    return message[: MAX_RUN_MESSAGE - 1] + "…"


def sum_usage(usages: Sequence[Usage]) -> Usage:
    return Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        cached_input_tokens=sum(u.cached_input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
    )


def wall_bounce_result(
    settings: WallBounceSettings,
    runs: Sequence[tuple[WallBounceProvider, RunnerResult]],
    *,
    duration_seconds: float | None = None,
) -> RunnerResult:
    """The result of a wall-bounce turn from each provider's run (a single-turn RunnerResult each).

    Completed runs are compared. Fewer than min_providers completed, or a
    consensus below the quality threshold, makes the turn fail; the chosen
    answer is still the final message, so a human can read it.
    """
    completed = [(p, r) for p, r in runs if r.outcome == "completed"]
    answers = {p.provider_id: r.final_message or "" for p, r in completed}
    consensus, chosen, confidence = score(answers)
    chosen_run = next((r for p, r in completed if p.provider_id == chosen), None)
    total = len(settings.providers)

    errors: list[str] = []
    if len(completed) < settings.min_providers:
        errors.append(
            f"only {len(completed)} of {total} providers answered; wall-bounce needs {settings.min_providers}"
        )
    elif consensus is not None and consensus < settings.quality_threshold:
        errors.append(
            f"consensus {consensus:.2f} is below the quality threshold {settings.quality_threshold:.2f}"
        )
    outcome, exit_code = ("turn_failed", EXIT_TURN_FAILED) if errors else ("completed", EXIT_COMPLETED)
    for provider, run in runs:
        if run.outcome != "completed":
            errors += [f"{provider.provider_id}: {e}"[:2000] for e in run.errors or [run.outcome]]

    wall_bounce = WallBounceOutcome(
        providers_used=[p.provider_id for p, _ in completed],
        consensus_score=consensus,
        confidence_score=confidence,
        chosen_provider=chosen,
        min_providers=settings.min_providers,
        quality_threshold=settings.quality_threshold,
        runs=[
            ProviderRun(
                provider=provider.provider_id,
                model=provider.model,
                outcome=run.outcome,
                final_message=clip_message(run.final_message),
                usage=run.usage,
                errors=run.errors[:MAX_ERRORS],
                duration_seconds=run.duration_seconds,
            )
            for provider, run in runs
        ],
    )
    return RunnerResult(
        outcome=outcome,
        thread_id=chosen_run.thread_id if chosen_run else None,
        final_message=chosen_run.final_message if chosen_run else None,
        usage=sum_usage([run.usage for _, run in runs]),
        commands=sum(run.commands for _, run in runs),
        file_changes=sum(run.file_changes for _, run in runs),
        errors=errors[:MAX_ERRORS],
        exit_code=exit_code,
        duration_seconds=duration_seconds,
        wall_bounce=wall_bounce,
    )
