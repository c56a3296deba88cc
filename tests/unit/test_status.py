"""Typed status (codex_api.status): the operator's writes are strict, every
reader's reads are lenient, and usage has one spelling after Codex's JSONL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from codex_api.session import MAX_RESPONSE, Usage
from codex_api.status import (
    approval_status,
    approval_status_patch,
    phase_of,
    session_status,
    session_status_patch,
)


# --------------------------------------------------------------------------- writes
@pytest.mark.parametrize(
    "fields",
    [
        {"phse": "Running"},  # misspelt key: the API server would prune it silently
        {"phase": "Runing"},  # not a phase
        {"usage": {"inputTokens": -1}},
        {"usage": {"input_tokens": 1, "tokens": 3}},  # unknown nested key
        {"response": "x" * (MAX_RESPONSE + 1)},
        {"conditions": [{"type": "Bad Type", "status": "True"}]},
        {"attempts": 101},
        {"timings": {"startedAt": "yesterday"}},
        {"cost": {"actualUsd": -0.5}},
    ],
)
def test_a_session_status_write_the_crd_refuses_fails_in_the_operator(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        session_status_patch(fields)


def test_a_session_status_patch_is_camel_case_and_only_what_was_given() -> None:
    patch = session_status_patch(
        {
            "phase": "Running",
            "podName": "s-runner-1",
            "timings": {"startedAt": "2026-12-04T10:00:00Z"},
            "usage": {"input_tokens": 3},
            "message": None,  # explicit None: a merge patch removes the field
        }
    )
    assert patch == {
        "phase": "Running",
        "podName": "s-runner-1",
        "timings": {"startedAt": "2026-12-04T10:00:00Z"},
        "usage": {"inputTokens": 3},
        "message": None,
    }


def test_an_approval_status_write_is_checked_too() -> None:
    assert approval_status_patch({"phase": "Approved", "decidedBy": "alice"}) == {
        "phase": "Approved",
        "decidedBy": "alice",
    }
    with pytest.raises(ValidationError):
        approval_status_patch({"phase": "Approved", "approvedBy": "alice"})
    with pytest.raises(ValidationError):
        approval_status_patch({"phase": "Maybe"})


# --------------------------------------------------------------------------- reads
def test_a_read_drops_keys_a_newer_operator_may_have_written() -> None:
    obj = {
        "status": {
            "phase": "Succeeded",
            "futureField": {"x": 1},
            "usage": {"inputTokens": 7, "outputTokens": 2, "newKind": 5},
            "cost": {"actualUsd": 0.25, "providers": [{"provider": "a", "actualUsd": 0.1, "extra": 1}]},
        }
    }
    status = session_status(obj)
    assert status.phase == "Succeeded"
    assert status.usage == Usage(input_tokens=7, output_tokens=2)
    assert status.cost is not None and status.cost.providers[0].actual_usd == 0.1


def test_a_field_that_does_not_parse_is_left_unset_not_the_whole_read() -> None:
    status = session_status({"status": {"phase": "Running", "attempts": "many", "podName": "p"}})
    assert (status.phase, status.attempts, status.pod_name) == ("Running", None, "p")


@pytest.mark.parametrize("obj", [None, {}, {"status": None}, {"status": {}}])
def test_no_status_reads_as_empty(obj: Any) -> None:
    assert session_status(obj).phase is None
    assert approval_status(obj).phase is None
    assert phase_of(obj) is None


def test_phase_of_ignores_a_phase_that_is_not_a_string() -> None:
    assert phase_of({"status": {"phase": ["Running"]}}) is None
    assert phase_of({"status": {"phase": "Queued"}}) == "Queued"


# --------------------------------------------------------------------------- usage
def test_usage_from_codex_reads_codex_spelling_once() -> None:
    raw = {"input_tokens": 10, "cached_input_tokens": 4, "output_tokens": 3, "reasoning_output_tokens": 2}
    usage = Usage.from_codex(raw)
    assert usage == Usage(input_tokens=10, cached_input_tokens=4, output_tokens=3, reasoning_tokens=2)
    assert usage.by_kind() == {"input": 10, "cached_input": 4, "output": 3, "reasoning": 2}
    assert usage.to_k8s() == {
        "inputTokens": 10,
        "cachedInputTokens": 4,
        "outputTokens": 3,
        "reasoningTokens": 2,
    }


@pytest.mark.parametrize(
    "raw",
    [None, "lots", [], {"input_tokens": "10"}, {"input_tokens": -5}, {"input_tokens": True}, {"x": 1}],
)
def test_usage_from_codex_survives_hostile_input(raw: Any) -> None:
    assert Usage.from_codex(raw) == Usage()
