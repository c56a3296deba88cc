"""Kubernetes condition bookkeeping (codex_operator.conditions)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from codex_operator.conditions import get_condition, now, parse_time, rfc3339, set_condition

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(hours=1, seconds=7)


def test_rfc3339_and_parse_time() -> None:
    assert rfc3339(T0) == "2025-03-01T12:00:00Z"
    # other offsets are converted to UTC; sub-seconds dropped
    tokyo = datetime(2025, 3, 1, 21, 0, 0, 987654, tzinfo=timezone(timedelta(hours=9)))
    assert rfc3339(tokyo) == "2025-03-01T12:00:00Z"
    assert parse_time("2025-03-01T12:00:00Z") == T0
    assert parse_time("2025-03-01T21:00:00+09:00") == T0
    assert parse_time(rfc3339(T2)) == T2
    assert parse_time(None) is None
    assert parse_time("") is None


def test_now_is_utc_whole_seconds() -> None:
    moment = now()
    assert moment.tzinfo is UTC
    assert moment.microsecond == 0


def test_set_condition_on_empty() -> None:
    empties: tuple[list[dict[str, Any]] | None, ...] = (None, [])
    for empty in empties:
        out = set_condition(empty, "Ready", "False", "Pending", "waiting", 3, T0)
        assert out == [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Pending",
                "message": "waiting",
                "lastTransitionTime": "2025-03-01T12:00:00Z",
                "observedGeneration": 3,
            }
        ]


def test_transition_time_changes_only_on_status_change() -> None:
    conds = set_condition(None, "Ready", "False", "Pending", "waiting", 1, T0)
    # same status, new reason/message/generation: time kept, the rest updated
    conds = set_condition(conds, "Ready", "False", "Queued", "in queue", 2, T1)
    assert get_condition(conds, "Ready") == {
        "type": "Ready",
        "status": "False",
        "reason": "Queued",
        "message": "in queue",
        "lastTransitionTime": "2025-03-01T12:00:00Z",
        "observedGeneration": 2,
    }
    # status change: time moves
    conds = set_condition(conds, "Ready", "True", "Running", "pod started", 2, T2)
    assert get_condition(conds, "Ready")["lastTransitionTime"] == "2025-03-01T13:00:07Z"  # type: ignore[index]
    # Unknown is a status of its own
    conds = set_condition(conds, "Ready", "Unknown", "Lost", "?", 2, T1)
    assert get_condition(conds, "Ready")["lastTransitionTime"] == "2025-03-01T12:05:00Z"  # type: ignore[index]


def test_other_conditions_untouched_and_input_not_mutated() -> None:
    approved: dict[str, Any] = {
        "type": "Approved",
        "status": "True",
        "reason": "AutoApproved",
        "message": "auto_approve_read_only is true",
        "lastTransitionTime": "2024-01-01T00:00:00Z",
        "observedGeneration": 1,
        "extra": "kept",
    }
    ready: dict[str, Any] = {
        "type": "Ready",
        "status": "False",
        "reason": "Pending",
        "message": "",
        "lastTransitionTime": "2024-01-01T00:00:00Z",
    }
    before = [approved, ready]
    snapshot = copy.deepcopy(before)
    out = set_condition(before, "Ready", "True", "Completed", "done", 4, T0)
    assert before == snapshot  # the input list and its dicts are unchanged
    assert out[0] == snapshot[0]
    assert get_condition(out, "Approved") == snapshot[0]
    assert get_condition(out, "Ready") == {
        "type": "Ready",
        "status": "True",
        "reason": "Completed",
        "message": "done",
        "lastTransitionTime": "2025-03-01T12:00:00Z",
        "observedGeneration": 4,
    }
    assert [c["type"] for c in out] == ["Approved", "Ready"]
    assert len(out) == 2


def test_new_type_is_appended() -> None:
    conds = set_condition(None, "Approved", "True", "AutoApproved", "ok", 1, T0)
    conds = set_condition(conds, "Ready", "False", "Pending", "", 1, T1)
    assert [c["type"] for c in conds] == ["Approved", "Ready"]
    assert get_condition(conds, "Approved")["lastTransitionTime"] == "2025-03-01T12:00:00Z"  # type: ignore[index]
    assert get_condition(conds, "Ready")["lastTransitionTime"] == "2025-03-01T12:05:00Z"  # type: ignore[index]


def test_observed_generation() -> None:
    conds = set_condition(None, "Ready", "True", "R", "m", 7, T0)
    assert conds[0]["observedGeneration"] == 7
    conds = set_condition(conds, "Ready", "True", "R", "m", 8, T1)
    assert conds[0]["observedGeneration"] == 8
    # generation unknown: the key is omitted rather than stale
    conds = set_condition(conds, "Ready", "True", "R", "m", None, T1)
    assert "observedGeneration" not in conds[0]
    # 0 is a generation, not "unknown"
    assert set_condition(None, "Ready", "True", "R", "m", 0, T0)[0]["observedGeneration"] == 0


def test_message_truncated_to_1024() -> None:
    out = set_condition(None, "Ready", "False", "Failed", "é" * 5000, 1, T0)
    assert out[0]["message"] == "é" * 1024
    assert len(out[0]["message"]) == 1024
    exact = "m" * 1024
    assert set_condition(None, "Ready", "False", "Failed", exact, 1, T0)[0]["message"] == exact
    assert set_condition(None, "Ready", "False", "Failed", exact + "x", 1, T0)[0]["message"] == exact


def test_get_condition() -> None:
    conds = [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]
    assert get_condition(conds, "B") == {"type": "B", "status": "False"}
    assert get_condition(conds, "C") is None
    assert get_condition(None, "A") is None
    assert get_condition([], "A") is None
