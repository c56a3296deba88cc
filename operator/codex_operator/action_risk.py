"""The per-action risk matrix: how risky one action Codex asks to take is, and
whether it is decided without a human (``[security.action_approvals]``).

| risk     | when (defaults)                                                  |
|----------|------------------------------------------------------------------|
| critical | curl/wget piped to a shell; any hidden character (escapes, bidi) |
| high     | a path outside /workspace; network; sudo, rm -r/-f, chmod, dd... |
| high     | wider permissions (the base risk of `permissions`)               |
| medium   | any other command or patch (base risks)                          |

Every matching rule counts (the highest risk, the most careful decision), and
nothing is accepted without a human unless a rule says so and the risk is at
most `auto_accept_up_to` (medium by default). An action that
hides characters from a terminal always waits for a human: what a reviewer
reads must be what runs.

The rules are a tripwire for reviewers, not the sandbox: paths are compared
as written (normalized, symlinks unresolved) and a command is matched as
text. What an action can reach is bounded by the runner pod.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache

from codex_api.actions import Action
from codex_api.common import RiskLevel
from codex_api.config import ActionApprovalsConfig, ActionDecision, ActionRule

from .risk import at_least

HIDDEN_CHARACTERS = "hidden-characters"
_CAREFUL: tuple[ActionDecision, ...] = ("decline", "ask", "accept")


@dataclass(frozen=True)
class ActionAssessment:
    risk: RiskLevel
    decision: ActionDecision
    rules: tuple[str, ...]  # the matching rules, in config order


def assess_action(action: Action, policy: ActionApprovalsConfig) -> ActionAssessment:
    risk: RiskLevel = policy.base_risk(action.kind)
    matched: list[str] = []
    decisions: set[ActionDecision] = set()
    for rule in policy.rules:
        if not _matches(rule, action):
            continue
        matched.append(rule.name)
        if rule.risk is not None and at_least(rule.risk, risk):
            risk = rule.risk
        if rule.decide is not None:
            decisions.add(rule.decide)
    if action.hidden_characters:
        matched.append(HIDDEN_CHARACTERS)
        risk = "critical"
        decisions.add("ask")
    decision: ActionDecision = next((d for d in _CAREFUL if d in decisions), "ask")
    if decision == "accept" and not at_least(policy.auto_accept_up_to, risk):
        decision = "ask"
    return ActionAssessment(risk=risk, decision=decision, rules=tuple(matched))


def _matches(rule: ActionRule, action: Action) -> bool:
    if action.kind not in rule.kinds:
        return False
    if rule.command is not None:
        script = action.script
        if script is None or _pattern(rule.command).search(script) is None:
            return False
    paths = [posixpath.normpath(p) for p in action.paths]
    if rule.outside is not None and not any(not _within(p, rule.outside) for p in paths):
        return False
    # "Every path inside" needs a path: an action that names none is not inside anything.
    if rule.inside is not None and not (paths and all(_within(p, rule.inside) for p in paths)):
        return False
    return rule.network is None or rule.network == _asks_network(action)


def _within(path: str, roots: list[str]) -> bool:
    for root in roots:
        root = posixpath.normpath(root)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def _asks_network(action: Action) -> bool:
    return action.network_host is not None or (action.permissions is not None and action.permissions.network)


@lru_cache(maxsize=256)
def _pattern(source: str) -> re.Pattern[str]:
    return re.compile(source)
