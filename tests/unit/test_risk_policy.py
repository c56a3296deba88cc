"""Risk matrix (codex_operator.risk) and approval decisions (codex_operator.approval_policy)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from codex_api.common import RISK_LEVELS, SANDBOX_LEVELS
from codex_api.config import CodexMCPConfig, ConfigError, RiskLevelsConfig, parse_config
from codex_api.session import CodexSessionSpec
from codex_operator.approval_policy import ApprovalDecision, decide
from codex_operator.risk import assess_risk, at_least

SEED_TEXT = (Path(__file__).resolve().parents[2] / "config" / "codex-mcp.toml").read_text()
SANDBOXES = SANDBOX_LEVELS
MODES = ("interactive", "non-interactive", "ci")
APPROVERS = ("codex-approvers",)


def spec(sandbox: str, mode: str = "interactive", full_auto: bool = False) -> CodexSessionSpec:
    return CodexSessionSpec.model_validate(
        {"prompt": "fix the bug", "sandbox": sandbox, "mode": mode, "fullAuto": full_auto}
    )


def with_policy(text: str, policy: str) -> str:
    old = 'approval_policy = "risk-based"'
    assert old in text
    return text.replace(old, f'approval_policy = "{policy}"')


@pytest.fixture(scope="module")
def seed() -> CodexMCPConfig:
    return parse_config(SEED_TEXT)


# The DESIGN table with the seed's [security.risk_levels]:
# critical: full-access + fullAuto + ci; high: full-access;
# medium: isolated, or fullAuto, or ci; low: read-only, interactive.
EXPECTED_SEED_RISK = {
    ("read-only", "interactive", False): "low",
    ("read-only", "interactive", True): "medium",
    ("read-only", "non-interactive", False): "low",
    ("read-only", "non-interactive", True): "medium",
    ("read-only", "ci", False): "medium",
    ("read-only", "ci", True): "medium",
    ("isolated", "interactive", False): "medium",
    ("isolated", "interactive", True): "medium",
    ("isolated", "non-interactive", False): "medium",
    ("isolated", "non-interactive", True): "medium",
    ("isolated", "ci", False): "medium",
    ("isolated", "ci", True): "medium",
    ("full-access", "interactive", False): "high",
    ("full-access", "interactive", True): "high",
    ("full-access", "non-interactive", False): "high",
    ("full-access", "non-interactive", True): "high",
    ("full-access", "ci", False): "high",
    ("full-access", "ci", True): "critical",
}


def test_matrix_covers_every_combination() -> None:
    assert set(EXPECTED_SEED_RISK) == set(itertools.product(SANDBOXES, MODES, (False, True)))
    assert len(EXPECTED_SEED_RISK) == 18


@pytest.mark.parametrize(("sandbox", "mode", "full_auto"), sorted(EXPECTED_SEED_RISK))
def test_seed_risk_matrix(seed: CodexMCPConfig, sandbox: str, mode: str, full_auto: bool) -> None:
    risk = assess_risk(spec(sandbox, mode, full_auto), seed.security.risk_levels)
    assert risk == EXPECTED_SEED_RISK[(sandbox, mode, full_auto)]


def test_seed_risk_levels_equal_model_defaults(seed: CodexMCPConfig) -> None:
    assert seed.security.risk_levels == RiskLevelsConfig()
    assert seed.security.risk_levels.for_sandbox("read-only") == "low"
    assert seed.security.risk_levels.for_sandbox("isolated") == "medium"
    assert seed.security.risk_levels.for_sandbox("full-access") == "high"


def test_config_raises_base_levels() -> None:
    text = SEED_TEXT.replace('"read-only" = "low"', '"read-only" = "high"').replace(
        '"isolated" = "medium"', '"isolated" = "critical"'
    )
    levels = parse_config(text).security.risk_levels
    assert levels.read_only == "high"
    assert levels.isolated == "critical"
    for mode, full_auto in itertools.product(MODES, (False, True)):
        # fullAuto/ci only raise to *at least* medium: a higher base stays.
        assert assess_risk(spec("read-only", mode, full_auto), levels) == "high"
        assert assess_risk(spec("isolated", mode, full_auto), levels) == "critical"
    assert assess_risk(spec("full-access"), levels) == "high"
    assert assess_risk(spec("full-access", "ci", True), levels) == "critical"


def test_lowered_base_levels_still_respect_floor_and_critical() -> None:
    levels = RiskLevelsConfig.model_validate({"read-only": "low", "isolated": "low", "full-access": "low"})
    assert assess_risk(spec("full-access"), levels) == "low"
    assert assess_risk(spec("isolated"), levels) == "low"
    assert assess_risk(spec("isolated", "ci"), levels) == "medium"
    assert assess_risk(spec("isolated", "interactive", True), levels) == "medium"
    assert assess_risk(spec("full-access", "non-interactive", True), levels) == "medium"
    # all three together are critical whatever the config says
    assert assess_risk(spec("full-access", "ci", True), levels) == "critical"


def test_at_least() -> None:
    for i, risk in enumerate(RISK_LEVELS):
        for j, floor in enumerate(RISK_LEVELS):
            assert at_least(risk, floor) is (i >= j), (risk, floor)
    assert at_least("medium", "high") is False
    assert at_least("critical", "high") is True


# --------------------------------------------------------------------------- approval, seed (risk-based)

# (sandbox, mode, full_auto) -> (auto_approved, reason, approver_groups)
CI = "require_manual_approval_for_ci is true (ci mode)"
CRITICAL = "critical risk always needs a human approver"
EXPECTED_SEED_DECISION = {
    ("read-only", "interactive", False): (True, "auto_approve_read_only is true", ()),
    ("read-only", "interactive", True): (True, "auto_approve_read_only is true", ()),
    ("read-only", "non-interactive", False): (True, "auto_approve_read_only is true", ()),
    ("read-only", "non-interactive", True): (True, "auto_approve_read_only is true", ()),
    ("read-only", "ci", False): (False, CI, ()),
    ("read-only", "ci", True): (False, CI, ()),
    ("isolated", "interactive", False): (False, "auto_approve_isolated is false", ()),
    ("isolated", "interactive", True): (False, "auto_approve_isolated is false", ()),
    ("isolated", "non-interactive", False): (False, "auto_approve_isolated is false", ()),
    ("isolated", "non-interactive", True): (False, "auto_approve_isolated is false", ()),
    ("isolated", "ci", False): (False, CI, ()),
    ("isolated", "ci", True): (False, CI, ()),
    ("full-access", "interactive", False): (False, "auto_approve_full_access is false", APPROVERS),
    ("full-access", "interactive", True): (False, "auto_approve_full_access is false", APPROVERS),
    ("full-access", "non-interactive", False): (False, "auto_approve_full_access is false", APPROVERS),
    ("full-access", "non-interactive", True): (False, "auto_approve_full_access is false", APPROVERS),
    ("full-access", "ci", False): (False, CI, APPROVERS),
    ("full-access", "ci", True): (False, CRITICAL, APPROVERS),
}


@pytest.mark.parametrize(("sandbox", "mode", "full_auto"), sorted(EXPECTED_SEED_DECISION))
def test_seed_decisions(seed: CodexMCPConfig, sandbox: str, mode: str, full_auto: bool) -> None:
    s = spec(sandbox, mode, full_auto)
    risk = assess_risk(s, seed.security.risk_levels)
    decision = decide(s, risk, seed)
    auto, reason, groups = EXPECTED_SEED_DECISION[(sandbox, mode, full_auto)]
    assert decision == ApprovalDecision(auto, reason, groups)
    assert decision.needs_human is (not auto)


def test_flags_flip_decisions() -> None:
    text = (
        SEED_TEXT.replace("auto_approve_read_only = true", "auto_approve_read_only = false")
        .replace("auto_approve_isolated = false", "auto_approve_isolated = true")
        .replace("auto_approve_full_access = false", "auto_approve_full_access = true")
        .replace("require_manual_approval_for_ci = true", "require_manual_approval_for_ci = false")
    )
    cfg = parse_config(text)
    assert decide(spec("read-only"), "low", cfg) == ApprovalDecision(False, "auto_approve_read_only is false")
    assert decide(spec("isolated", "ci"), "medium", cfg) == ApprovalDecision(
        True, "auto_approve_isolated is true"
    )
    # auto-approved: no approver groups even at high risk
    assert decide(spec("full-access", "ci"), "high", cfg) == ApprovalDecision(
        True, "auto_approve_full_access is true"
    )
    # critical is never waived by any flag
    assert decide(spec("full-access", "ci", True), "critical", cfg) == ApprovalDecision(
        False, CRITICAL, APPROVERS
    )


def test_approver_groups_come_from_config() -> None:
    cfg = parse_config(SEED_TEXT + '\n[kubernetes]\napprover_groups = ["sec-team", "leads"]\n')
    assert decide(spec("full-access"), "high", cfg).approver_groups == ("sec-team", "leads")
    assert decide(spec("full-access", "ci", True), "critical", cfg).approver_groups == ("sec-team", "leads")
    assert decide(spec("isolated"), "medium", cfg).approver_groups == ()
    # groups follow the risk, not the sandbox: a raised read-only base needs approvers
    assert decide(spec("read-only", "ci"), "high", cfg) == ApprovalDecision(False, CI, ("sec-team", "leads"))
    assert decide(spec("read-only", "ci"), "low", cfg) == ApprovalDecision(False, CI, ())


# --------------------------------------------------------------------------- auto-approve / always-manual


@pytest.mark.parametrize(("sandbox", "mode", "full_auto"), sorted(EXPECTED_SEED_RISK))
def test_auto_approve_policy(sandbox: str, mode: str, full_auto: bool) -> None:
    cfg = parse_config(with_policy(SEED_TEXT, "auto-approve"))
    assert cfg.mcp.approval_policy == "auto-approve"
    s = spec(sandbox, mode, full_auto)
    risk = assess_risk(s, cfg.security.risk_levels)
    decision = decide(s, risk, cfg)
    if (sandbox, mode, full_auto) == ("full-access", "ci", True):
        assert decision == ApprovalDecision(False, CRITICAL, APPROVERS)
        assert decision.needs_human is True
    else:
        assert decision == ApprovalDecision(True, "approval_policy is auto-approve", ())
        assert decision.needs_human is False


def test_auto_approve_critical_from_raised_base_needs_human() -> None:
    cfg = parse_config(with_policy(SEED_TEXT, "auto-approve"))
    assert decide(spec("isolated"), "critical", cfg) == ApprovalDecision(False, CRITICAL, APPROVERS)


@pytest.mark.parametrize(("sandbox", "mode", "full_auto"), sorted(EXPECTED_SEED_RISK))
def test_always_manual_policy(sandbox: str, mode: str, full_auto: bool) -> None:
    cfg = parse_config(with_policy(SEED_TEXT, "always-manual"))
    s = spec(sandbox, mode, full_auto)
    risk = assess_risk(s, cfg.security.risk_levels)
    decision = decide(s, risk, cfg)
    groups = APPROVERS if risk in ("high", "critical") else ()
    reason = CRITICAL if risk == "critical" else "approval_policy is always-manual"
    assert decision == ApprovalDecision(False, reason, groups)
    assert decision.needs_human is True


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ConfigError, match="approval_policy"):
        parse_config(with_policy(SEED_TEXT, "yolo"))
