"""Runners through the model proxy: the pod, its NetworkPolicy and the turn's
settings all follow one answer (codex_operator.model_access)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from codex_api.config import CodexMCPConfig, parse_config
from codex_api.model_credential import SessionRef, verify
from codex_api.session import CodexSessionSpec
from codex_operator.model_access import model_access
from codex_operator.netpol_builder import build_network_policy
from codex_operator.pod_builder import build_runner_pod
from codex_operator.wall_bounce import plan_wall_bounce
from codex_runner.contract import turn_settings_for

KEY = b"s" * 32
REF = SessionRef("codex-sessions", "fix-bug", "6f1c1f57-0c38-4b7e-9d43-3c2f0c3f0a11")
PROVIDERS = """
[[kubernetes.wall_bounce_providers]]
provider_id = "gpt"
base_url = "https://api.openai.com/v1"
model = "gpt-5"

[[kubernetes.wall_bounce_providers]]
provider_id = "local"
base_url = "http://10.1.2.3:8000/v1"
model = "qwen"
egress_cidrs = ["10.1.2.3/32"]
egress_ports = [8000]
"""
PROXY = """
[model_proxy]
url = "http://codex-model-proxy.codex-system.svc:8090"
namespace_labels = { "kubernetes.io/metadata.name" = "codex-system" }
pod_labels = { "app.kubernetes.io/component" = "model-proxy" }
"""


def _turn(config: CodexMCPConfig, spec: CodexSessionSpec, sandbox: str = "read-only") -> dict[str, Any]:
    access = model_access(config, plan_wall_bounce(spec, config), REF, KEY)
    wb = access.wall_bounce
    settings = turn_settings_for(
        spec,
        model="gpt-5",
        resume_thread_id=None,
        endpoint=access.endpoint,
        wall_bounce=wb.settings() if wb else None,
    )
    pod = build_runner_pod(
        session_name=REF.name,
        session_uid=REF.uid,
        namespace=REF.namespace,
        spec=spec,
        settings=settings,
        conversation=REF.name,
        attempt=1,
        timeout_seconds=300,
        config=config,
        credential=access.credential,
    )
    policy = build_network_policy(
        session_name=REF.name,
        namespace=REF.namespace,
        session_uid=REF.uid,
        conversation=REF.name,
        sandbox=sandbox,
        endpoint=access.endpoint,
        extra_endpoints=wb.providers if wb else (),
    )
    return {"access": access, "settings": settings, "pod": pod, "policy": policy}


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def test_without_the_proxy_runners_read_keys_from_secrets() -> None:
    config = parse_config(PROVIDERS)
    turn = _turn(config, CodexSessionSpec(prompt="p"))
    assert turn["access"].credential is None
    assert "secretKeyRef" in _env(turn["pod"])["CODEX_MODEL_API_KEY"]["valueFrom"]
    assert turn["settings"].base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize("sandbox", ["read-only", "isolated", "full-access"])
def test_through_the_proxy_a_runner_holds_only_its_credential_and_reaches_only_the_proxy(
    sandbox: str,
) -> None:
    config = parse_config(PROVIDERS + PROXY)
    spec = CodexSessionSpec(prompt="p", sandbox=sandbox)
    turn = _turn(config, spec, sandbox)
    env = _env(turn["pod"])
    credential = env["CODEX_MODEL_API_KEY"]["value"]
    assert verify(KEY, credential) == REF
    assert not any("valueFrom" in e for e in env.values()), "no Secret is referenced"
    assert turn["settings"].base_url == "http://codex-model-proxy.codex-system.svc:8090/v1/openai-api"
    egress = turn["policy"]["spec"]["egress"]
    proxy_rule = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "codex-system"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "model-proxy"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 8090}],
    }
    assert egress[1] == proxy_rule
    if sandbox == "full-access":
        assert len(egress) == 3 and "ports" not in egress[2]  # its public rule stays
    else:
        assert len(egress) == 2, "DNS and the proxy, nothing else"
    assert "0.0.0.0/0" not in json.dumps(egress[:2])


def test_a_wall_bounce_runner_reaches_every_provider_through_the_proxy() -> None:
    config = parse_config(PROVIDERS + PROXY)
    spec = CodexSessionSpec.model_validate({"prompt": "p", "wallBounce": {"providers": ["gpt", "local"]}})
    turn = _turn(config, spec)
    env = _env(turn["pod"])
    credential = env["CODEX_MODEL_API_KEY"]["value"]
    # Every provider's variable carries the same credential; none a key.
    assert env["CODEX_WB_GPT_API_KEY"] == {"name": "CODEX_WB_GPT_API_KEY", "value": credential}
    assert env["CODEX_WB_LOCAL_API_KEY"] == {"name": "CODEX_WB_LOCAL_API_KEY", "value": credential}
    urls = {p.provider_id: p.base_url for p in turn["settings"].wall_bounce.providers}
    assert urls == {
        "gpt": "http://codex-model-proxy.codex-system.svc:8090/v1/gpt",
        "local": "http://codex-model-proxy.codex-system.svc:8090/v1/local",
    }
    egress = turn["policy"]["spec"]["egress"]
    assert len(egress) == 2, "the providers' own addresses (10.1.2.3:8000, the internet) are not reachable"
    assert "10.1.2.3" not in json.dumps(egress)


def test_the_proxy_needs_a_signing_key_and_an_egress_peer() -> None:
    config = parse_config(PROXY)
    with pytest.raises(RuntimeError, match="CODEX_PROXY_SIGNING_KEY"):
        model_access(config, None, REF, None)
    with pytest.raises(ValidationError, match="no peer"):
        CodexMCPConfig.model_validate({"model_proxy": {"url": "http://proxy:8090"}})
    for bad in ("ftp://proxy", "http://", "http://proxy:8090/v1", "http://proxy:99999"):
        with pytest.raises(ValidationError):
            CodexMCPConfig.model_validate({"model_proxy": {"url": bad, "egress_cidrs": ["10.0.0.1/32"]}})
    cidr = CodexMCPConfig.model_validate(
        {"model_proxy": {"url": "https://proxy/", "egress_cidrs": ["10.0.0.1/32"]}}
    )
    assert cidr.model_proxy.url == "https://proxy" and cidr.model_proxy.port == 443
