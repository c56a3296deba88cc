"""The warm pool's pure pieces: a slot's objects (codex_operator.warm_pool) and
the configuration that turns a pool on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from codex_api import names
from codex_api.config import CodexMCPConfig, WarmRunnersConfig
from codex_api.session import CodexSessionSpec
from codex_operator.model_access import runner_endpoint
from codex_operator.pod_builder import LivePod, build_runner_pod, pod_shape
from codex_operator.warm_pool import (
    SLOT_PREFIX,
    build_slot,
    is_pool_born,
    is_unclaimed,
    new_slot_id,
    slot_claim,
    slot_of,
)
from codex_runner.contract import turn_settings_for

LIVE = LivePod(
    public_key_pem="-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
    key_fingerprint="ab" * 16,
    port=8470,
    idle_seconds=300,
    lifetime_seconds=3600,
)
WARM = {
    "idle_seconds": 300,
    "operator_cidrs": ["10.244.0.1/32"],
    "pool_sizes": {"isolated": 2},
}
PROXY = {"url": "http://proxy.codex-system:8090", "egress_cidrs": ["10.96.0.10/32"]}


def _config(**warm: Any) -> CodexMCPConfig:
    return CodexMCPConfig.model_validate(
        {"kubernetes": {"warm_runners": {**WARM, **warm}}, "model_proxy": PROXY}
    )


def _turn_pod(config: CodexMCPConfig, claim: str, **spec_fields: Any) -> dict[str, Any]:
    """The pod a first turn of alice's would get with `claim` as its workspace."""
    spec = CodexSessionSpec.model_validate(
        {
            "prompt": "do it",
            "sandbox": "isolated",
            "workspace": {"type": "persistent"},
            "requestedBy": "alice",
            **spec_fields,
        }
    )
    settings = turn_settings_for(
        spec,
        model=spec.model or config.codex.model,
        resume_thread_id=None,
        endpoint=runner_endpoint(config),
        network_fence_seconds=config.kubernetes.network_fence_seconds,
    )
    return build_runner_pod(
        session_name="turn-1",
        session_uid="uid-1",
        namespace="codex-sessions",
        spec=spec,
        settings=settings,
        conversation="turn-1",
        attempt=1,
        timeout_seconds=600,
        config=config,
        credential="cxs1.alice-credential",
        live=LIVE,
        workspace_claim=claim,
    )


def test_a_slot_is_no_one_s_and_holds_no_credential() -> None:
    config = _config()
    slot = build_slot(slot="pool-abc", level="isolated", namespace="codex-sessions", config=config, live=LIVE)
    for obj in (slot.claim, slot.policy, slot.pod):
        meta = obj["metadata"]
        assert meta["ownerReferences"] == []
        assert meta["labels"][names.LABEL_POOL] == "isolated"
        assert names.LABEL_SESSION not in meta["labels"] and names.LABEL_CONVERSATION not in meta["labels"]
    assert slot.claim["metadata"]["name"] == names.workspace_claim("pool-abc")
    assert slot.claim["metadata"]["annotations"] == {
        names.ANNOTATION_REQUESTER: "",
        names.ANNOTATION_CONVERSATION: "",
    }
    assert slot.policy["spec"]["podSelector"] == {"matchLabels": {names.LABEL_POLICY: "pool-abc"}}
    text = json.dumps(slot.pod)
    assert "secretKeyRef" not in text and "cxs1." not in text
    assert is_unclaimed(slot.pod) and is_pool_born(slot.pod)
    assert slot_of(slot.pod) == "pool-abc" and slot_claim(slot.pod) == names.workspace_claim("pool-abc")
    (volume,) = [v for v in slot.pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == slot_claim(slot.pod)


def test_a_first_turn_with_the_defaults_has_the_slot_s_shape_and_others_do_not() -> None:
    config = _config()
    slot = build_slot(slot="pool-abc", level="isolated", namespace="codex-sessions", config=config, live=LIVE)
    claim = slot_claim(slot.pod)
    shape = slot.pod["metadata"]["annotations"][names.ANNOTATION_POD_SHAPE]
    assert pod_shape(_turn_pod(config, claim)) == shape
    assert pod_shape(_turn_pod(config, names.workspace_claim("turn-1"))) != shape  # another workspace
    for change in ({"sandbox": "read-only"}, {"model": "o1"}, {"reasoningEffort": "high"}):
        assert pod_shape(_turn_pod(config, claim, **change)) != shape, change


def test_the_policy_of_a_slot_is_the_level_s_own() -> None:
    """The strict policy from the start: the same rules as the policy of a turn at
    that level."""
    config = _config(pool_sizes={"isolated": 1, "full-access": 1})
    for level in ("isolated", "full-access"):
        slot = build_slot(slot="pool-x", level=level, namespace="ns", config=config, live=LIVE)
        public = [
            peer
            for rule in slot.policy["spec"]["egress"]
            for peer in rule.get("to", [])
            if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
        ]
        assert bool(public) == (level == "full-access"), level


def test_slot_ids_are_random_and_valid_names() -> None:
    ids = {new_slot_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith(SLOT_PREFIX) and i.isascii() and i == i.lower() and len(i) == 15 for i in ids)


@pytest.mark.parametrize(
    ("warm", "proxy", "message"),
    [
        ({"idle_seconds": 0}, PROXY, "pool_sizes needs idle_seconds"),
        ({"pool_sizes": {"isolated": 30}}, PROXY, "more than max_idle_pods"),
        ({"pool_max_age_seconds": 2000}, PROXY, "at most half of max_pod_lifetime_seconds"),
        ({"pool_sizes": {"isolated": -1}}, PROXY, "greater than or equal to 0"),
        ({"pool_sizes": {"no-such-level": 1}}, PROXY, "read-only"),
        ({}, {}, r"needs \[model_proxy\]\.url"),
    ],
)
def test_bad_pool_settings_are_refused(warm: dict[str, Any], proxy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CodexMCPConfig.model_validate(
            {"kubernetes": {"warm_runners": {**WARM, **warm}}, "model_proxy": proxy}
        )


def test_no_pool_by_default() -> None:
    assert WarmRunnersConfig().pool_size == 0
    assert _config().kubernetes.warm_runners.pool_size == 2


def test_a_first_turn_made_by_the_gateway_fits_the_pool_of_its_default_level() -> None:
    """The gateway's `codex` call with only a prompt is what the pool is for: its
    session's pod must have the slot's shape, or every gateway first turn
    would start cold beside a waiting pool."""
    from codex_gateway.sessions import CodexArgs, build_session

    level = CodexMCPConfig().codex.sandbox
    config = _config(pool_sizes={level: 1})
    body = build_session(CodexArgs(prompt="hi"), user="alice", config=config)
    spec = CodexSessionSpec.model_validate(body["spec"])
    assert spec.sandbox == level
    slot = build_slot(slot="pool-abc", level=spec.sandbox, namespace="ns", config=config, live=LIVE)
    fields = spec.to_k8s()
    del fields["prompt"]
    pod = _turn_pod(config, slot_claim(slot.pod), **fields)
    assert pod_shape(pod) == slot.pod["metadata"]["annotations"][names.ANNOTATION_POD_SHAPE]
