"""Wall-bounce scoring and outcome rules (codex_runner.consensus), without Codex."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from codex_api.result import EXIT_COMPLETED, EXIT_TURN_FAILED, RunnerResult, parse_frame
from codex_api.session import Usage
from codex_devenv.testkit import wall_bounce_provider, wall_bounce_settings
from codex_runner.consensus import (
    MAX_COMPARED,
    clip_message,
    normalize,
    score,
    similarity,
    sum_usage,
    wall_bounce_result,
)
from codex_runner.contract import WallBounceProvider

# --------------------------------------------------------------------------- similarity


def test_normalize() -> None:
    assert normalize("  Hello\n\tWORLD  ") == "hello world"
    assert normalize("Straße") == "strasse"  # casefold, not lower


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("same", "same"),
        ("Same  answer\n", "same answer"),
        ("", ""),
        ("   ", "\n"),
        ("STRASSE", "straße"),
    ],
)
def test_identical_after_normalizing_is_one(a: str, b: str) -> None:
    assert similarity(a, b) == 1.0


@pytest.mark.parametrize(("a", "b"), [("", "x"), ("answer", ""), ("  ", "answer")])
def test_one_empty_is_zero(a: str, b: str) -> None:
    assert similarity(a, b) == 0.0


def test_similarity_orders_answers_sensibly() -> None:
    base = "The factorial of 5 is 120, computed as 5 * 4 * 3 * 2 * 1."
    close = "The factorial of 5 is 120, computed as 1 * 2 * 3 * 4 * 5."
    far = "Use a loop over range(1, n + 1) and multiply an accumulator."
    assert 0 < similarity(base, far) < similarity(base, close) < 1
    assert similarity(base, close) > 0.6
    assert similarity(base, far) < 0.3


def test_similarity_of_long_near_identical_answers_is_high() -> None:
    # character-level SequenceMatcher with autojunk scores this about 0
    text = "The factorial of n is the product of all positive integers up to n. " * 60
    edited = text.replace("product", "multiplication", 3)
    assert similarity(text, edited) > 0.95


def test_similarity_is_symmetric_and_bounded() -> None:
    rng = random.Random(7)
    words = ["the", "answer", "is", "42", ".", "def", "f", "(", ")", "return", "n", "Straße"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(40)]
    for a, b in itertools.combinations(texts, 2):
        value = similarity(a, b)
        assert 0.0 <= value <= 1.0
        assert value == similarity(b, a)


def test_similarity_compares_only_the_first_characters() -> None:
    head = "word " * (MAX_COMPARED // 5)
    assert similarity(head + "tail one", head + "something else entirely") == 1.0


def test_similarity_of_big_answers_is_quick() -> None:
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "(", ")", "=", "return", "value", "n"]
    a = " ".join(rng.choice(words) for _ in range(3000))
    b = " ".join(rng.choice(words) for _ in range(3000))
    started = time.monotonic()
    similarity(a, b)
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------- score


def test_score_of_identical_answers() -> None:
    assert score({"a": "42", "b": "42", "c": " 42 "}) == (1.0, "a", 1.0)


def test_score_picks_the_answer_closest_to_the_others() -> None:
    answers = {
        "odd": "Bananas are yellow fruit grown in the tropics.",
        "one": "The result is 120 because 5! = 120.",
        "two": "The result is 120 since 5! equals 120.",
    }
    consensus, chosen, confidence = score(answers)
    assert chosen in ("one", "two")
    pairs = [similarity(answers[x], answers[y]) for x, y in itertools.combinations(answers, 2)]
    assert consensus == round(sum(pairs) / 3, 4)
    others = [similarity(answers[chosen], answers[o]) for o in answers if o != chosen]
    assert confidence == round(sum(others) / 2, 4)
    assert confidence is not None and consensus is not None and confidence >= consensus


def test_score_ties_go_to_the_earlier_provider() -> None:
    assert score({"b": "x y", "a": "x y"})[1] == "b"
    assert score({"first": "one", "second": "two"}) == (0.0, "first", 0.0)


def test_score_of_one_and_no_answers() -> None:
    assert score({"only": "an answer"}) == (None, "only", None)
    assert score({}) == (None, None, None)


def test_score_of_two_is_their_similarity() -> None:
    a, b = "Return n * factorial(n - 1).", "return n*factorial(n-1) recursively"
    consensus, chosen, confidence = score({"p1": a, "p2": b})
    assert consensus == confidence == round(similarity(a, b), 4) and chosen == "p1"


# --------------------------------------------------------------------------- outcome rules


def run(
    outcome: str = "completed",
    message: str | None = "The answer is 42.",
    *,
    thread: str = "t",
    tokens: int = 10,
    errors: list[str] | None = None,
) -> RunnerResult:
    return RunnerResult.model_validate(
        {
            "outcome": outcome,
            "thread_id": thread,
            "final_message": message,
            "usage": Usage(input_tokens=tokens, cached_input_tokens=1, output_tokens=2, reasoning_tokens=3),
            "commands": 1,
            "errors": errors or ([] if outcome == "completed" else [f"{outcome} happened"]),
            "exit_code": 0 if outcome == "completed" else 1,
            "duration_seconds": 1.5,
        }
    )


P = [wall_bounce_provider(i, model=f"model-{i}") for i in (1, 2, 3)]


def runs_of(*results: RunnerResult) -> list[tuple[WallBounceProvider, RunnerResult]]:
    return list(zip(P, results, strict=False))


def test_all_agree_completes() -> None:
    settings = wall_bounce_settings(*P, min_providers=2, quality_threshold=0.7)
    result = wall_bounce_result(
        settings,
        runs_of(run(thread="t1", tokens=100), run(thread="t2", tokens=200), run(thread="t3", tokens=300)),
        duration_seconds=4.5,
    )
    assert (result.outcome, result.exit_code, result.errors) == ("completed", EXIT_COMPLETED, [])
    assert result.final_message == "The answer is 42." and result.thread_id == "t1"
    assert result.usage == Usage(input_tokens=600, cached_input_tokens=3, output_tokens=6, reasoning_tokens=9)
    assert result.commands == 3 and result.duration_seconds == 4.5
    wb = result.wall_bounce
    assert wb is not None
    assert wb.providers_used == ["p1", "p2", "p3"]
    assert (wb.consensus_score, wb.confidence_score, wb.chosen_provider) == (1.0, 1.0, "p1")
    assert (wb.min_providers, wb.quality_threshold) == (2, 0.7)
    assert [(r.provider, r.model, r.outcome, r.usage.input_tokens) for r in wb.runs] == [
        ("p1", "model-1", "completed", 100),
        ("p2", "model-2", "completed", 200),
        ("p3", "model-3", "completed", 300),
    ]
    assert all(r.duration_seconds == 1.5 and r.final_message == "The answer is 42." for r in wb.runs)
    assert parse_frame(result.frame()) == result


def test_disagreement_fails_but_keeps_the_chosen_answer() -> None:
    settings = wall_bounce_settings(*P, min_providers=2, quality_threshold=0.6)
    result = wall_bounce_result(
        settings,
        runs_of(
            run(message="Bananas are yellow.", thread="t1"),
            run(message="The sum is 120 because 5! = 120.", thread="t2"),
            run(message="The sum is 120 since 5! = 120.", thread="t3"),
        ),
    )
    assert result.outcome == "turn_failed" and result.exit_code == EXIT_TURN_FAILED
    wb = result.wall_bounce
    assert wb is not None and wb.consensus_score is not None and wb.chosen_provider == "p2"
    assert result.errors == [f"consensus {wb.consensus_score:.2f} is below the quality threshold 0.60"]
    assert result.final_message == "The sum is 120 because 5! = 120." and result.thread_id == "t2"
    assert wb.providers_used == ["p1", "p2", "p3"]


def test_consensus_exactly_at_the_threshold_completes() -> None:
    a, b = "alpha beta gamma delta", "alpha beta gamma epsilon"
    threshold = round(similarity(a, b), 4)
    settings = wall_bounce_settings(*P[:2], quality_threshold=threshold)
    result = wall_bounce_result(settings, runs_of(run(message=a), run(message=b)))
    assert result.outcome == "completed", result.errors


def test_too_few_answers_fail() -> None:
    settings = wall_bounce_settings(*P, min_providers=3, quality_threshold=0.5)
    result = wall_bounce_result(
        settings,
        runs_of(
            run(thread="t1"), run("turn_failed", None, thread="t2", errors=["HTTP 500"]), run(thread="t3")
        ),
    )
    assert result.outcome == "turn_failed" and result.exit_code == EXIT_TURN_FAILED
    assert result.errors == ["only 2 of 3 providers answered; wall-bounce needs 3", "p2: HTTP 500"]
    assert result.final_message == "The answer is 42." and result.thread_id == "t1"
    wb = result.wall_bounce
    assert wb is not None and wb.providers_used == ["p1", "p3"] and wb.consensus_score == 1.0
    assert wb.runs[1].outcome == "turn_failed" and wb.runs[1].errors == ["HTTP 500"]
    assert result.usage.input_tokens == 30  # failed runs count too: their requests were paid for


def test_enough_answers_despite_a_failure_complete_and_report_it() -> None:
    settings = wall_bounce_settings(*P, min_providers=2, quality_threshold=0.5)
    result = wall_bounce_result(
        settings, runs_of(run("turn_failed", None, thread="t1"), run(thread="t2"), run(thread="t3"))
    )
    assert result.outcome == "completed" and result.exit_code == EXIT_COMPLETED
    assert result.errors == ["p1: turn_failed happened"]
    assert result.thread_id == "t2"
    assert result.wall_bounce is not None and result.wall_bounce.chosen_provider == "p2"


def test_one_answer_needed_and_given() -> None:
    settings = wall_bounce_settings(*P[:2], min_providers=1, quality_threshold=1.0)
    result = wall_bounce_result(
        settings, runs_of(run("internal_error", None), run(message="ok", thread="t2"))
    )
    assert result.outcome == "completed"
    wb = result.wall_bounce
    assert wb is not None
    assert (wb.consensus_score, wb.confidence_score, wb.chosen_provider) == (None, None, "p2")
    assert result.final_message == "ok"


def test_no_answers() -> None:
    settings = wall_bounce_settings(*P[:2], min_providers=1)
    result = wall_bounce_result(settings, runs_of(run("turn_failed", None), run("config_error", None)))
    assert result.outcome == "turn_failed"
    assert result.errors[0] == "only 0 of 2 providers answered; wall-bounce needs 1"
    assert result.final_message is None and result.thread_id is None
    assert result.wall_bounce is not None and result.wall_bounce.chosen_provider is None


def test_long_answers_are_clipped_in_the_runs_but_not_the_final_message() -> None:
    long = "x" * 10_000
    settings = wall_bounce_settings(*P[:2])
    result = wall_bounce_result(settings, runs_of(run(message=long), run(message=long)))
    assert result.final_message == long
    assert result.wall_bounce is not None
    assert [len(r.final_message or "") for r in result.wall_bounce.runs] == [4000, 4000]
    assert clip_message(None) is None and clip_message("a" * 4000) == "a" * 4000


def test_errors_are_bounded() -> None:
    failing = [run("turn_failed", None, errors=[f"e{i}" for i in range(10)]) for _ in range(3)]
    result = wall_bounce_result(wall_bounce_settings(*P, min_providers=3), runs_of(*failing))
    assert len(result.errors) == 10 and result.errors[0].startswith("only 0 of 3")


def test_sum_usage() -> None:
    assert sum_usage([]) == Usage()
    assert sum_usage([Usage(input_tokens=1), Usage(input_tokens=2, output_tokens=5)]) == Usage(
        input_tokens=3, output_tokens=5
    )
