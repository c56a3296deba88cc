"""codex_api.sandbox: the one table of sandbox levels, and that every reader follows it."""

from __future__ import annotations

import pytest

from codex_api import sandbox
from codex_api.common import SANDBOX_LEVELS
from codex_api.config import ApprovalWorkflowsConfig, CodexMCPConfig, RiskLevelsConfig
from codex_api.session import CodexSessionSpec
from codex_devenv.generate import sandbox_table
from codex_operator.approval_policy import decide
from codex_operator.netpol_builder import build_network_policy
from codex_runner.invocation import CODEX_SANDBOX


def test_one_profile_per_level_in_order() -> None:
    assert tuple(sandbox.PROFILES) == SANDBOX_LEVELS
    assert all(p.level == level for level, p in sandbox.PROFILES.items())


def test_the_seed_defaults_are_the_profiles() -> None:
    risks, flows = RiskLevelsConfig(), ApprovalWorkflowsConfig()
    for level, p in sandbox.PROFILES.items():
        assert risks.for_sandbox(level) == p.default_risk
        assert getattr(flows, p.auto_approve_key) is p.auto_approve_default


def test_only_levels_that_change_nothing_are_cached_or_bounced() -> None:
    for p in sandbox.PROFILES.values():
        if p.cacheable or p.wall_bounce:
            assert p.workspace_read_only and p.egress == "model-only", p.level
    assert sandbox.wall_bounce_levels() == ["read-only"]


def test_the_runner_the_policy_and_the_approval_follow_the_table() -> None:
    assert {level: p.codex_mode for level, p in sandbox.PROFILES.items()} == CODEX_SANDBOX
    config = CodexMCPConfig()
    for level, p in sandbox.PROFILES.items():
        policy = build_network_policy(
            session_name="s",
            namespace="ns",
            session_uid="u",
            conversation="s",
            sandbox=level,
            endpoint=config.kubernetes.model_endpoint,
        )
        public = any("ports" not in rule for rule in policy["spec"]["egress"])
        assert public is (p.egress == "public"), level
        decision = decide(CodexSessionSpec(prompt="p", sandbox=level), p.default_risk, config)
        assert decision.auto_approved is p.auto_approve_default, level
        assert p.auto_approve_key in decision.reason


def test_unknown_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sandbox must be one of read-only, isolated, full-access; got 'x'"):
        sandbox.profile("x")


def test_tool_description_names_every_level() -> None:
    text = sandbox.tool_description()
    assert all(level in text for level in SANDBOX_LEVELS) and "default from config" in text


def test_security_doc_table_is_current() -> None:
    doc = sandbox_table.DOC
    assert sandbox_table.outputs() == {doc: doc.read_text()}, "run `make generate`"
    assert "| `full-access` | writable |" in doc.read_text()
