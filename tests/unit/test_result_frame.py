"""The runner's result frame (codex_api.result)."""

from __future__ import annotations

import json

import pytest

from codex_api.result import (
    FRAME_PREFIX,
    TERMINATION_MESSAGE_LIMIT,
    ProviderRun,
    RunnerResult,
    WallBounceOutcome,
    clip_response,
    parse_frame,
)
from codex_api.session import MAX_RESPONSE, Usage

USAGE = Usage(input_tokens=123_456, cached_input_tokens=100_000, output_tokens=7_890, reasoning_tokens=4_321)


def full(**kw: object) -> RunnerResult:
    base: dict[str, object] = {
        "outcome": "completed",
        "thread_id": "0199a5c2-1f2e-7c1a-9b7d-2f0c1e3d4a5b",
        "final_message": 'Done.\nChanged "src/app.py" — 2 files.\t\\o/',
        "usage": USAGE,
        "commands": 7,
        "file_changes": 2,
        "errors": [],
        "exit_code": 0,
        "duration_seconds": 12.5,
    }
    base.update(kw)
    return RunnerResult.model_validate(base)


def test_limit_constant() -> None:
    assert TERMINATION_MESSAGE_LIMIT == 4096
    assert FRAME_PREFIX == "::codex-result::"


def test_frame_round_trip() -> None:
    result = full()
    text = result.frame()
    assert text.startswith(FRAME_PREFIX)
    assert "\n" not in text  # one line, whatever the message holds
    assert parse_frame(text) == result
    body = json.loads(text[len(FRAME_PREFIX) :])
    assert body["outcome"] == "completed"
    assert body["usage"] == {
        "input_tokens": 123_456,
        "cached_input_tokens": 100_000,
        "output_tokens": 7_890,
        "reasoning_tokens": 4_321,
    }
    assert body["truncated"] is False


def test_frame_omits_none_and_defaults_parse_back() -> None:
    minimal = RunnerResult(outcome="turn_failed", exit_code=1, errors=["boom"])
    body = json.loads(minimal.frame()[len(FRAME_PREFIX) :])
    assert "thread_id" not in body
    assert "final_message" not in body
    assert "duration_seconds" not in body
    back = parse_frame(minimal.frame())
    assert back == minimal
    assert back is not None and back.usage == Usage()


def test_bounded_frame_small_is_the_frame() -> None:
    result = full()
    assert result.bounded_frame() == result.frame()
    assert parse_frame(result.bounded_frame()).truncated is False  # type: ignore[union-attr]


HUGE_MESSAGES = {
    "ascii": "x" * 50_000,
    "cjk": "日本語のテキスト" * 5_000,
    "emoji": "😀🚀" * 10_000,
    "mixed": ("é" + "ß" + "€" + "𝄞" + "a") * 10_000,
    "quotes": '"' * 20_000,
    "newlines": "line\n" * 10_000,
    "backslashes": "\\" * 20_000,
    "control": "\x01\x02" * 10_000,
    "code": 'def f(x):\n\treturn "x\\n" + x\n' * 2_000,
}


@pytest.mark.parametrize("name", sorted(HUGE_MESSAGES))
def test_bounded_frame_fits_and_parses(name: str) -> None:
    message = HUGE_MESSAGES[name]
    errors = [f"error {i}: " + "é" * 3000 for i in range(10)]
    result = full(final_message=message, errors=errors, outcome="turn_failed", exit_code=1)
    text = result.bounded_frame()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert "\n" not in text
    back = parse_frame(text)
    assert back is not None
    assert back.truncated is True
    assert back.outcome == "turn_failed"
    assert back.exit_code == 1
    assert back.thread_id == result.thread_id
    assert back.usage == USAGE
    assert (back.commands, back.file_changes, back.duration_seconds) == (7, 2, 12.5)
    assert back.errors == [e[:200] for e in errors[:3]]
    assert back.final_message is not None
    assert message.startswith(back.final_message)
    # the space is used, not thrown away: at least a few hundred characters survive
    assert len(back.final_message) >= 100
    # shortened by characters, never splitting one
    assert back.final_message.encode().decode() == back.final_message


@pytest.mark.parametrize("name", sorted(HUGE_MESSAGES))
def test_bounded_frame_smaller_limit(name: str) -> None:
    result = full(final_message=HUGE_MESSAGES[name])
    text = result.bounded_frame(limit=1500)
    assert len(text.encode()) <= 1500
    back = parse_frame(text)
    assert back is not None and back.truncated is True
    assert HUGE_MESSAGES[name].startswith(back.final_message or "")


def test_bounded_frame_ascii_fills_the_budget() -> None:
    text = full(final_message="x" * 50_000).bounded_frame()
    assert 4096 - 64 <= len(text.encode()) <= 4096


def test_bounded_frame_many_errors_without_message() -> None:
    result = RunnerResult(outcome="internal_error", exit_code=70, errors=["ü" * 5000 for _ in range(10)])
    text = result.bounded_frame()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = parse_frame(text)
    assert back is not None
    assert back.truncated is True
    assert back.errors == ["ü" * 200] * 3
    assert back.final_message == ""


def test_bounded_frame_does_not_modify_original() -> None:
    result = full(final_message="x" * 10_000, errors=["e" * 500] * 5)
    result.bounded_frame()
    assert result.final_message == "x" * 10_000
    assert result.errors == ["e" * 500] * 5
    assert result.truncated is False


# --------------------------------------------------------------------------- parse_frame


def test_parse_frame_takes_last_valid_frame() -> None:
    first = full(final_message="first")
    second = full(final_message="second")
    log = "\n".join(
        [
            '{"type":"thread.started"}',
            first.frame(),
            "some codex output",
            second.frame(),
            "trailing noise",
            "",
        ]
    )
    assert parse_frame(log) == second


def test_parse_frame_skips_malformed_frames() -> None:
    good = full(final_message="good")
    log = "\n".join(
        [
            good.frame(),
            FRAME_PREFIX + "{not json",
            FRAME_PREFIX + '{"outcome": "exploded"}',
            FRAME_PREFIX + '{"outcome": "completed", "commands": -1}',
            FRAME_PREFIX + '{"outcome": "completed", "errors": ' + json.dumps(["e"] * 11) + "}",
            FRAME_PREFIX + "[1, 2]",
            FRAME_PREFIX,
            good.frame()[: len(good.frame()) // 2],  # cut off mid-frame
        ]
    )
    assert parse_frame(log) == good


def test_parse_frame_line_handling() -> None:
    good = full(final_message="ok")
    assert parse_frame("  " + good.frame() + "  \r\n") == good
    assert parse_frame("noise\r\n" + good.frame() + "\r\n") == good
    # the prefix must start the line: a frame quoted inside other output is not one
    assert parse_frame("echo " + good.frame()) is None
    assert parse_frame("") is None
    assert parse_frame("no frames at all\n{}\n") is None


def test_parse_frame_ignores_unknown_fields() -> None:
    text = FRAME_PREFIX + json.dumps({"outcome": "completed", "future_field": {"a": 1}, "commands": 3})
    assert parse_frame(text) == RunnerResult(outcome="completed", commands=3)


# --------------------------------------------------------------------------- clip_response


def test_clip_response() -> None:
    assert clip_response(None) == (None, False)
    assert clip_response("") == ("", False)
    assert clip_response("short") == ("short", False)
    exact = "a" * MAX_RESPONSE
    assert clip_response(exact) == (exact, False)
    over = "b" * (MAX_RESPONSE + 1)
    clipped, truncated = clip_response(over)
    assert truncated is True
    assert clipped == "b" * (MAX_RESPONSE - 1) + "…"
    assert clipped is not None and len(clipped) == MAX_RESPONSE
    huge, truncated = clip_response("日" * (MAX_RESPONSE * 3))
    assert truncated is True
    assert huge == "日" * (MAX_RESPONSE - 1) + "…"


# --------------------------------------------------------------------------- wall-bounce


def wall_bounce_result(answers: dict[str, str], **kw: object) -> RunnerResult:
    runs = [
        ProviderRun(
            provider=provider,
            model=f"model-{provider}",
            outcome="completed",
            final_message=answer,
            usage=USAGE,
            duration_seconds=3.25,
        )
        for provider, answer in answers.items()
    ]
    first = next(iter(answers))
    return full(
        final_message=answers[first],
        usage=Usage(
            input_tokens=USAGE.input_tokens * len(runs),
            cached_input_tokens=USAGE.cached_input_tokens * len(runs),
            output_tokens=USAGE.output_tokens * len(runs),
            reasoning_tokens=USAGE.reasoning_tokens * len(runs),
        ),
        wall_bounce=WallBounceOutcome(
            providers_used=list(answers),
            consensus_score=0.75,
            confidence_score=0.8125,
            chosen_provider=first,
            min_providers=2,
            quality_threshold=0.7,
            runs=runs,
        ),
        **kw,
    )


def test_wall_bounce_frame_round_trip() -> None:
    result = wall_bounce_result({"openai": "4", "anthropic": "four", "gemini": "4."})
    assert parse_frame(result.frame()) == result
    assert result.bounded_frame() == result.frame()
    body = json.loads(result.frame()[len(FRAME_PREFIX) :])
    assert body["wall_bounce"]["runs"][1] == {
        "provider": "anthropic",
        "model": "model-anthropic",
        "outcome": "completed",
        "final_message": "four",
        "usage": USAGE.model_dump(),
        "errors": [],
        "duration_seconds": 3.25,
    }
    assert "wall_bounce" not in json.loads(full().frame()[len(FRAME_PREFIX) :])


@pytest.mark.parametrize("name", sorted(HUGE_MESSAGES))
def test_bounded_wall_bounce_frame_drops_the_runs_answers_first(name: str) -> None:
    message = HUGE_MESSAGES[name]
    clipped = message[:4000]
    result = wall_bounce_result({"openai": clipped, "anthropic": clipped[::-1], "gemini": clipped.upper()})
    result = result.model_copy(update={"final_message": message})
    text = result.bounded_frame()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = parse_frame(text)
    assert back is not None and back.truncated is True
    assert back.usage == result.usage  # the sum over the runs
    assert back.wall_bounce is not None and result.wall_bounce is not None
    assert [r.final_message for r in back.wall_bounce.runs] == [None] * 3
    assert [(r.provider, r.outcome, r.usage, r.duration_seconds) for r in back.wall_bounce.runs] == [
        (r.provider, r.outcome, r.usage, r.duration_seconds) for r in result.wall_bounce.runs
    ]
    assert back.wall_bounce.model_copy(update={"runs": []}) == result.wall_bounce.model_copy(
        update={"runs": []}
    )
    assert back.final_message is not None and message.startswith(back.final_message)
    assert len(back.final_message) >= 100


def test_bounded_wall_bounce_frame_keeps_the_whole_chosen_answer_when_it_can() -> None:
    answer = "The answer is 42. " * 100  # 1800 characters: three runs of it do not fit, one does
    result = wall_bounce_result({"a": answer, "b": answer, "c": answer})
    assert len(result.frame().encode()) > TERMINATION_MESSAGE_LIMIT
    back = parse_frame(result.bounded_frame())
    assert back is not None and back.truncated is True
    assert back.final_message == answer
    assert back.wall_bounce is not None and all(r.final_message is None for r in back.wall_bounce.runs)


def test_bounded_wall_bounce_frame_worst_case_still_fits() -> None:
    errors = ["\x01" * 2000 for _ in range(10)]
    runs = [
        ProviderRun(
            provider=f"{i}" + "p" * 63,
            model="m" * 128,
            outcome="turn_failed",
            final_message="\x02" * 4000,
            usage=USAGE,
            errors=errors,
            duration_seconds=1.5,
        )
        for i in range(8)
    ]
    result = full(
        outcome="turn_failed",
        exit_code=1,
        final_message="\x03" * 50_000,
        errors=errors,
        wall_bounce=WallBounceOutcome(
            providers_used=[r.provider for r in runs],
            chosen_provider=runs[0].provider,
            min_providers=8,
            quality_threshold=1.0,
            runs=runs,
        ),
    )
    text = result.bounded_frame()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = parse_frame(text)
    assert back is not None and back.truncated is True
    assert back.usage == USAGE and back.outcome == "turn_failed" and back.exit_code == 1


def test_wall_bounce_models_ignore_unknown_fields() -> None:
    text = FRAME_PREFIX + json.dumps(
        {
            "outcome": "completed",
            "wall_bounce": {
                "min_providers": 2,
                "quality_threshold": 0.5,
                "future": 1,
                "runs": [{"provider": "a", "outcome": "completed", "future": 2}],
            },
        }
    )
    back = parse_frame(text)
    assert back is not None and back.wall_bounce is not None
    assert back.wall_bounce.runs == [ProviderRun(provider="a", outcome="completed")]
