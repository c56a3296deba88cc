"""What the gateway charges a finished turn against the monthly budget (and counts in
codex_mcp_cost_usd_total): codex_gateway.observer.cost_of."""

from __future__ import annotations

from typing import Any

import pytest

from codex_gateway.observer import cost_of


def session(phase: str, *, started: bool, actual: float | None, estimate: float = 0.02) -> dict[str, Any]:
    cost: dict[str, Any] = {"estimatedUsd": estimate}
    if actual is not None:
        cost["actualUsd"] = actual
    timings = {"startedAt": "2026-12-04T10:00:00Z"} if started else {}
    return {"metadata": {"name": "s"}, "status": {"phase": phase, "cost": cost, "timings": timings}}


@pytest.mark.parametrize(
    "phase", ["Denied", "Failed", "Cancelled"], ids=["denied", "refused-before-running", "cancelled-waiting"]
)
def test_a_turn_that_never_ran_costs_nothing(phase: str) -> None:
    # Before the fix the estimate was charged: a denied request ate into the budget.
    assert cost_of(session(phase, started=False, actual=None)) == 0.0


def test_the_actual_figure_wins() -> None:
    assert cost_of(session("Succeeded", started=True, actual=0.0043)) == 0.0043
    assert cost_of(session("Failed", started=True, actual=0.0)) == 0.0


@pytest.mark.parametrize("phase", ["TimedOut", "Failed", "Cancelled"])
def test_a_turn_that_ran_without_a_figure_is_charged_its_estimate(phase: str) -> None:
    assert cost_of(session(phase, started=True, actual=None)) == 0.02


def test_no_cost_at_all() -> None:
    assert cost_of({"metadata": {"name": "s"}, "status": {"phase": "Denied"}}) == 0.0
