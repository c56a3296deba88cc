"""The Helm chart, rendered by the pinned helm (built once from the Go module
proxy, hack/build-helm.sh): lint, defaults and variants, the security
settings of every container, the TOML configuration (validated by
`codex-operator config validate`), and the values schema's refusals.
Applying it to a real API server, and comparing it with the kustomize
install, is tests/integration/test_chart.py."""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from codex_devenv import helm
from codex_devenv.generate import helm_schema

REPO = Path(__file__).resolve().parents[2]
CODEX_OPERATOR = REPO / ".venv" / "bin" / "codex-operator"
Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def defaults() -> Objects:
    return helm.template()


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def names(objects: Objects, kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


def pod_specs(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def args_of(objects: Objects, deployment: str) -> list[str]:
    return list(find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["args"])


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} not in {args}"
    return args[args.index(name) + 1]


def config_toml(objects: Objects) -> str:
    return str(find(objects, "ConfigMap", "codex-config")["data"]["codex-mcp.toml"])


def validate_config(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "codex-mcp.toml"
    path.write_text(text)
    return subprocess.run(
        [str(CODEX_OPERATOR), "config", "validate", str(path)], capture_output=True, text=True, timeout=60
    )


# -- lint and the shape of the default install -------------------------------------------


def test_helm_is_the_pinned_release() -> None:
    pinned = dict(
        line.split("=", 1)
        for line in (REPO / "hack" / "versions.env").read_text().splitlines()
        if "=" in line
    )
    assert helm.run("version", "--short").stdout.startswith(pinned["HELM_VERSION"])


def test_helm_lint_strict_passes() -> None:
    out = helm.lint()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_helm_lint_strict_passes_with_kind_values() -> None:
    out = helm.lint(yaml.safe_load(helm.KIND_VALUES.read_text()))
    assert out.returncode == 0, out.stdout + out.stderr


def test_approvers_are_bound_in_the_sessions_namespace_by_their_groups() -> None:
    def binding(values: dict[str, Any]) -> dict[str, Any] | None:
        found = [
            d
            for d in helm.template(values)
            if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "codex-approvers"
        ]
        return found[0] if found else None

    default = binding({})
    assert default is not None and default["metadata"]["namespace"] == "codex-sessions"
    assert default["roleRef"]["name"] == "codex-approver"
    assert default["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "codex-approvers"}
    ]
    groups = binding(
        {"config": {"kubernetes": {"approver_groups": ["sre", "leads"]}}, "namespaces": {"sessions": "ai"}}
    )
    assert groups is not None and groups["metadata"]["namespace"] == "ai"
    assert [s["name"] for s in groups["subjects"]] == ["sre", "leads"]
    off = helm.template({"approvers": {"bindRbac": False}})
    assert not [d for d in off if d["metadata"]["name"] in ("codex-approver", "codex-approvers")]
    # what approvers may do: read, and set a decision; never create, delete or touch status
    role = next(
        d
        for d in helm.template({})
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "codex-approver"
    )
    verbs = {r["resources"][0]: set(r["verbs"]) for r in role["rules"]}
    assert verbs == {
        "codexsessions": {"get", "list", "watch"},
        "approvalrequests": {"get", "list", "watch", "patch", "update"},
    }


def test_default_install_objects(defaults: Objects) -> None:
    assert names(defaults, "Namespace") == {"codex-system", "codex-sessions"}
    assert names(defaults, "Deployment") == {
        "codex-operator",
        "codex-gateway",
        "codex-redis",
        "codex-model-proxy",
    }
    assert names(defaults, "Service") == {
        "codex-operator-metrics",
        "codex-operator-webhook",
        "codex-gateway",
        "codex-redis",
        "codex-model-proxy",
    }
    assert names(defaults, "ServiceAccount") == {
        "codex-operator",
        "codex-gateway",
        "codex-runner",
        "codex-model-proxy",
    }
    assert names(defaults, "ClusterRole") == {
        "codex-operator",
        "codex-gateway",
        "codex-approver",
        "codex-model-proxy",
    }
    assert names(defaults, "RoleBinding") == {
        "codex-operator",
        "codex-gateway",
        "codex-approvers",
        "codex-operator-leader-election",
        "codex-model-proxy",
    }
    assert names(defaults, "Role") == {"codex-operator-leader-election"}
    assert not names(defaults, "ClusterRoleBinding")
    assert names(defaults, "NetworkPolicy") == {
        "codex-operator",
        "codex-gateway",
        "codex-redis",
        "codex-model-proxy",
        "codex-runner-default-deny",
    }
    assert names(defaults, "ConfigMap") == {"codex-config", "codex-admission-params"}
    assert names(defaults, "Secret") == {
        "codex-operator-webhook-tls",
        "codex-redis-auth",
        "codex-model-proxy-signing-key",
        "codex-agent-signing-key",
    }
    assert names(defaults, "MutatingWebhookConfiguration") == {"codex-identity.codex.techsapo.io"}
    assert not names(defaults, "ServiceMonitor")
    assert not names(defaults, "PriorityClass")  # opt-in: runnerPriorityClass
    # Every object but the cluster-scoped ones lives in one of the two namespaces.
    cluster_scoped = {
        "PriorityClass",
        "Namespace",
        "ClusterRole",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for obj in defaults:
        ns = obj["metadata"].get("namespace")
        assert (ns is None) == (obj["kind"] in cluster_scoped), obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "codex-k8s-operator"


def test_crds_come_from_the_generated_files() -> None:
    with_crds = helm.template(include_crds=True)
    crds = [o for o in with_crds if o["kind"] == "CustomResourceDefinition"]
    committed = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    assert sorted(crds, key=lambda c: c["metadata"]["name"]) == sorted(
        committed, key=lambda c: c["metadata"]["name"]
    )


def test_admission_policies_are_the_generated_ones(defaults: Objects) -> None:
    chart_copy = helm.CHART_DIR / "files" / "admission.yaml"
    base = REPO / "manifests" / "base" / "admission.yaml"
    assert chart_copy.read_text() == base.read_text(), "run `make generate`"
    generated = [d for d in yaml.safe_load_all(base.read_text()) if d]
    rendered = {
        (o["kind"], o["metadata"]["name"]): o
        for o in defaults
        if o["kind"].startswith("ValidatingAdmissionPolicy")
    }
    assert set(rendered) == {(d["kind"], d["metadata"]["name"]) for d in generated}
    for want in generated:
        assert rendered[want["kind"], want["metadata"]["name"]]["spec"] == want["spec"]
    params = find(defaults, "ConfigMap", "codex-admission-params")
    assert params["metadata"]["namespace"] == "codex-system"
    assert params["data"] == {
        "approverGroups": "codex-approvers",
        "trustedRequesters": "system:serviceaccount:codex-system:codex-gateway",
        "operators": "system:serviceaccount:codex-system:codex-operator",
        "adminGroups": "codex-admins",
        # Requesters approve none of their own actions (they may always deny them).
        "requesterDecidesUpTo": "none",
        # Runners reach the model through the proxy: their pods may name no Secret at all.
        "runnerSecrets": "",
        "runnerServiceAccount": "codex-runner",
    }
    legacy = find(helm.template({"modelProxy": {"enabled": False}}), "ConfigMap", "codex-admission-params")
    assert legacy["data"]["runnerSecrets"] == "codex-model-api-key"


def test_admission_params_follow_how_far_requesters_decide() -> None:
    """The policy reads the very key the operator and the gateway read: they cannot disagree."""
    values = {"config": {"security": {"action_approvals": {"requester_decides_up_to": "medium"}}}}
    objects = helm.template(values)
    params = find(objects, "ConfigMap", "codex-admission-params")
    assert params["data"]["requesterDecidesUpTo"] == "medium"
    config = tomllib.loads(config_toml(objects))
    assert config["security"]["action_approvals"]["requester_decides_up_to"] == "medium"


# -- security of every pod ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"redis": {"enabled": False, "externalUrl": "redis://redis.example:6379/0"}},
        {"webhook": {"enabled": False}, "networkPolicy": {"enabled": False}},
    ],
    ids=["defaults", "external-redis", "no-webhook-no-netpol"],
)
def test_every_container_is_locked_down(values: dict[str, Any]) -> None:
    specs = dict(pod_specs(helm.template(values)))
    assert specs
    for name, spec in specs.items():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "privileged" not in sc and "add" not in sc["capabilities"], where
            assert c["livenessProbe"] and c["readinessProbe"], where
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, where
            assert c["imagePullPolicy"] in ("Always", "IfNotPresent", "Never"), where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for volume in spec.get("volumes", []):
            assert set(volume) & {"configMap", "secret", "emptyDir"}, f"{name}: {volume}"


@pytest.mark.parametrize("component", ["operator", "gateway", "model-proxy"])
def test_two_replicas_spread_rolled_without_unavailability_and_kept_through_drains(
    defaults: Objects, component: str
) -> None:
    spec = find(defaults, "Deployment", f"codex-{component}")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
    )
    pdb = find(defaults, "PodDisruptionBudget", f"codex-{component}")["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    key = {"model-proxy": "modelProxy"}.get(component, component)
    single = helm.template({key: {"replicas": 1}})
    assert sorted(d["metadata"]["name"] for d in single if d["kind"] == "PodDisruptionBudget") == [
        f"codex-{other}" for other in ("gateway", "model-proxy", "operator") if other != component
    ]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    custom = find(helm.template({key: {"affinity": own}}), "Deployment", f"codex-{component}")
    assert custom["spec"]["template"]["spec"]["affinity"] == own


def test_several_gateways_need_redis() -> None:
    with pytest.raises(helm.HelmError, match=r"gateway\.replicas > 1 needs Redis"):
        helm.template({"redis": {"enabled": False}})
    alone = helm.template({"redis": {"enabled": False}, "gateway": {"replicas": 1}})
    assert find(alone, "Deployment", "codex-gateway")["spec"]["replicas"] == 1
    external = helm.template({"redis": {"enabled": False, "externalUrl": "redis://redis.example:6379/0"}})
    assert find(external, "Deployment", "codex-gateway")["spec"]["replicas"] == 2


def test_operator_runs_with_leader_election(defaults: Objects) -> None:
    spec = find(defaults, "Deployment", "codex-operator")["spec"]
    assert "--leader-election" in spec["template"]["spec"]["containers"][0]["args"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "codex-operator"
    probe = pod["containers"][0]["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    # ready once it reconciles (the leader) or stands by serving the webhook (a follower)
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "webhook": 9443}


def test_operator_command_line(defaults: Objects) -> None:
    pod = find(defaults, "Deployment", "codex-operator")["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["codex-operator"]
    assert args_of(defaults, "codex-operator") == [
        "run",
        "--config",
        "/etc/codex/codex-mcp.toml",
        "--namespace",
        "codex-sessions",
        "--metrics-port",
        "9090",
        "--health-port",
        "8080",
        "--leader-election",
        "--webhook-port",
        "9443",
        "--webhook-cert",
        "/var/run/codex/webhook/tls.crt",
        "--webhook-key",
        "/var/run/codex/webhook/tls.key",
        "--trusted-requester",
        "system:serviceaccount:codex-system:codex-gateway",
    ]


def test_operator_flags_parse_with_the_real_cli(defaults: Objects) -> None:
    from codex_operator.cli import _build_parser

    args = _build_parser().parse_args(args_of(defaults, "codex-operator"))
    assert args.metrics_port == 9090 and args.health_port == 8080 and args.webhook_port == 9443
    assert args.namespace == ["codex-sessions"]


def test_gateway_command_line(defaults: Objects) -> None:
    gateway = find(defaults, "Deployment", "codex-gateway")
    pod = gateway["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["serviceAccountName"] == "codex-gateway"
    assert container["command"] == ["codex-gateway"]
    assert container["args"] == [
        "--config",
        "/etc/codex/codex-mcp.toml",
        "--tokens-file",
        "/var/run/codex/tokens/tokens.yaml",
        "--namespace",
        "codex-sessions",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--metrics-port",
        "9090",
        "--allowed-hosts",
        "codex-gateway:*,codex-gateway.codex-system:*,codex-gateway.codex-system.svc:*,"
        "codex-gateway.codex-system.svc.cluster.local:*",
    ]
    assert container["env"] == [
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "codex-redis-auth", "key": "password"}},
        },
        {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@codex-redis.codex-system.svc:6379/0"},
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert tokens["secret"] == {
        "secretName": "codex-gateway-tokens",
        "items": [{"key": "tokens.yaml", "path": "tokens.yaml"}],
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tokens"] == {"name": "tokens", "mountPath": "/var/run/codex/tokens", "readOnly": True}
    assert mounts["config"]["mountPath"] == "/etc/codex" and mounts["config"]["readOnly"]


def test_token_review_needs_an_audience_or_the_explicit_any_audience() -> None:
    from codex_gateway.cli import parser as gateway_parser
    from codex_gateway.cli import token_review_problem

    with pytest.raises(
        helm.HelmError, match=r"gateway.tokenReview.enabled needs gateway.tokenReview.audiences"
    ):
        helm.template({"gateway": {"tokenReview": {"enabled": True}}})
    objects = helm.template({"gateway": {"tokenReview": {"enabled": True, "anyAudience": True}}})
    args = args_of(objects, "codex-gateway")
    assert "--token-review-any-audience" in args and "--token-audience" not in args
    parsed = gateway_parser().parse_args(args)
    assert parsed.token_review_any_audience and token_review_problem(parsed) is None
    assert "--token-review-any-audience" not in args_of(
        helm.template({"gateway": {"tokenReview": {"enabled": True, "audiences": ["codex-gateway"]}}}),
        "codex-gateway",
    )


def test_gateway_flags_parse_with_the_real_cli(defaults: Objects) -> None:
    from codex_gateway.cli import parser as gateway_parser

    args = gateway_parser().parse_args(args_of(defaults, "codex-gateway"))
    assert args.port == 8080 and args.metrics_port == 9090 and args.host == "0.0.0.0"
    assert args.namespace == "codex-sessions" and args.tokens_file == "/var/run/codex/tokens/tokens.yaml"
    assert "codex-gateway.codex-system.svc:*" in args.allowed_hosts


def test_token_review_adds_the_flag_and_only_the_auth_delegator_binding(defaults: Objects) -> None:
    from codex_gateway.cli import parser as gateway_parser

    assert not [o for o in defaults if o["kind"] == "ClusterRoleBinding"]
    assert "--token-review" not in args_of(defaults, "codex-gateway")
    objects = helm.template({"gateway": {"tokenReview": {"enabled": True, "audiences": ["codex-gateway"]}}})
    args = gateway_parser().parse_args(args_of(objects, "codex-gateway"))
    assert args.token_review and args.token_audience == ["codex-gateway"]
    assert not args.token_review_any_audience
    (binding,) = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "codex-gateway", "namespace": "codex-system"}
    ]


def test_gateway_values(tmp_path: Path) -> None:
    objects = helm.template(
        {
            "gateway": {
                "replicas": 3,
                "allowedHosts": ["codex.example.com", "localhost:*"],
                "tokens": {"existingSecret": "my-tokens", "key": "users.json"},
                "service": {"type": "NodePort", "nodePort": 30080},
            },
            "namespaces": {"system": "ai-system", "sessions": "ai-sessions"},
        }
    )
    gateway = find(objects, "Deployment", "codex-gateway")
    assert gateway["spec"]["replicas"] == 3
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert flag(args, "--namespace") == "ai-sessions"
    hosts = flag(args, "--allowed-hosts").split(",")
    assert hosts[:4] == [
        "codex-gateway:*",
        "codex-gateway.ai-system:*",
        "codex-gateway.ai-system.svc:*",
        "codex-gateway.ai-system.svc.cluster.local:*",
    ]
    assert hosts[4:] == ["codex.example.com", "localhost:*"]
    tokens = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "tokens")
    assert tokens["secret"]["secretName"] == "my-tokens"
    assert tokens["secret"]["items"] == [{"key": "users.json", "path": "tokens.yaml"}]
    service = find(objects, "Service", "codex-gateway")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0] == {
        "name": "http",
        "port": 8080,
        "targetPort": "http",
        "protocol": "TCP",
        "nodePort": 30080,
    }
    operator_args = args_of(objects, "codex-operator")
    assert flag(operator_args, "--trusted-requester") == "system:serviceaccount:ai-system:codex-gateway"
    assert flag(operator_args, "--namespace") == "ai-sessions"
    binding = find(objects, "RoleBinding", "codex-gateway")
    assert binding["metadata"]["namespace"] == "ai-sessions"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "codex-gateway", "namespace": "ai-system"}
    ]
    for policy in (o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert policy["spec"]["paramRef"]["namespace"] == "ai-system"
    webhook = find(objects, "MutatingWebhookConfiguration", "codex-identity.codex.techsapo.io")
    assert {w["clientConfig"]["service"]["namespace"] for w in webhook["webhooks"]} == {"ai-system"}
    toml = tomllib.loads(config_toml(objects))
    assert toml["kubernetes"]["sessions_namespace"] == "ai-sessions"
    assert toml["kubernetes"]["operator_namespace"] == "ai-system"
    assert validate_config(config_toml(objects), tmp_path).returncode == 0


def test_sessions_namespace_is_pod_security_restricted(defaults: Objects) -> None:
    for name in ("codex-sessions", "codex-system"):
        labels = find(defaults, "Namespace", name)["metadata"]["labels"]
        for mode in ("enforce", "warn", "audit"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"
    pinned = helm.template({"namespaces": {"podSecurityVersion": "v1.34"}})
    labels = find(pinned, "Namespace", "codex-sessions")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.34"
    assert not names(helm.template({"namespaces": {"create": False}}), "Namespace")


def test_runner_account_has_no_token(defaults: Objects) -> None:
    runner = find(defaults, "ServiceAccount", "codex-runner")
    assert runner["metadata"]["namespace"] == "codex-sessions"
    assert runner["automountServiceAccountToken"] is False


# -- the configuration ------------------------------------------------------------------


def test_default_config_validates_and_keeps_the_seed(defaults: Objects, tmp_path: Path) -> None:
    text = config_toml(defaults)
    out = validate_config(text, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    rendered = tomllib.loads(text)
    seed = tomllib.loads((REPO / "config" / "codex-mcp.toml").read_text())
    assert {k: v for k, v in rendered.items() if k not in ("kubernetes", "model_proxy")} == seed
    # Runners reach the model through the in-chart proxy, by its Service and its pods' labels.
    assert rendered["model_proxy"] == {
        "url": "http://codex-model-proxy.codex-system.svc:8090",
        "namespace_labels": {"kubernetes.io/metadata.name": "codex-system"},
        "pod_labels": {
            "app.kubernetes.io/part-of": "codex-k8s-operator",
            "app.kubernetes.io/component": "model-proxy",
        },
    }
    kube = rendered["kubernetes"]
    assert kube["sessions_namespace"] == "codex-sessions" and kube["operator_namespace"] == "codex-system"
    assert kube["runner_image"] == "localhost/codex-runner:0.1.0"
    assert kube["runner_image_pull_policy"] == "IfNotPresent"
    assert kube["runner_service_account"] == "codex-runner"
    assert kube["model_endpoint"]["api_key_secret_name"] == "codex-model-api-key"
    assert kube["model_endpoint"]["api_key_secret_key"] == "api-key"


def test_config_values_reach_the_toml(tmp_path: Path) -> None:
    objects = helm.template(
        {
            "config": {
                "mcp": {"max_concurrent_sessions": 3, "quality_threshold": 1},
                "cost": {
                    "chars_per_token": 3.5,
                    "default": {
                        "provider": "x",
                        "input_usd_per_mtok": 1.25,
                        "cached_input_usd_per_mtok": 0,
                        "output_usd_per_mtok": 10,
                    },
                },
                "kubernetes": {
                    "default_ttl_seconds_after_finished": 2592000,
                    "runner_node_selector": {"pool.example.com/sandbox": "true"},
                    "runner_tolerations": [
                        {"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "gpu", "operator": "Equal", "value": "no"},
                    ],
                    "model_endpoint": {"egress_cidrs": ["10.1.0.0/16"], "egress_ports": [443, 8443]},
                },
            },
            "images": {
                "runner": {"registry": "", "repository": "codex/runner", "tag": "v2", "pullPolicy": "Always"}
            },
            "modelApiKey": {"existingSecret": "openai", "key": "token"},
        }
    )
    text = config_toml(objects)
    out = validate_config(text, tmp_path)
    assert out.returncode == 0, text + out.stdout + out.stderr
    toml = tomllib.loads(text)
    assert toml["mcp"]["max_concurrent_sessions"] == 3 and toml["mcp"]["session_timeout_ms"] == 300000
    assert toml["mcp"]["quality_threshold"] == 1 and toml["cost"]["chars_per_token"] == 3.5
    assert toml["cost"]["default"]["input_usd_per_mtok"] == 1.25
    kube = toml["kubernetes"]
    assert kube["default_ttl_seconds_after_finished"] == 2592000  # not 2.592e+06
    assert kube["runner_node_selector"] == {"pool.example.com/sandbox": "true"}
    assert kube["runner_tolerations"][1] == {"key": "gpu", "operator": "Equal", "value": "no"}
    assert kube["runner_image"] == "codex/runner:v2" and kube["runner_image_pull_policy"] == "Always"
    assert kube["model_endpoint"]["egress_ports"] == [443, 8443]
    assert kube["model_endpoint"]["api_key_secret_name"] == "openai"
    # A changed configuration rolls the pods.
    for name in ("codex-operator", "codex-gateway"):
        before = find(helm.template(), "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        after = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert before["checksum/config"] != after["checksum/config"]


def test_strings_are_escaped_for_toml(tmp_path: Path) -> None:
    tricky = 'Say "hi" \\ then <b>&</b>\ttab\nnew line ünïcode'
    objects = helm.template({"config": {"codex": {"base_instructions": tricky}}})
    text = config_toml(objects)
    assert validate_config(text, tmp_path).returncode == 0
    assert tomllib.loads(text)["codex"]["base_instructions"] == tricky


def test_a_config_the_operator_refuses_is_caught_by_the_test(tmp_path: Path) -> None:
    # The schema cannot express every rule (e.g. a valid CIDR); the operator's validation can.
    objects = helm.template({"config": {"kubernetes": {"model_endpoint": {"egress_cidrs": ["10.0.0.1/8"]}}}})
    out = validate_config(config_toml(objects), tmp_path)
    assert out.returncode != 0 and "kubernetes.model_endpoint.egress_cidrs" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sessions_namespace", "elsewhere"),
        ("runner_image", "other:1"),
        ("runner_service_account", "root"),
    ],
)
def test_derived_config_keys_cannot_be_overridden(key: str, value: str) -> None:
    with pytest.raises(helm.HelmError, match=f"config.kubernetes.{key} is set by the chart"):
        helm.template({"config": {"kubernetes": {key: value}}})


def test_derived_keys_may_repeat_the_derived_value() -> None:
    helm.template({"config": {"kubernetes": {"sessions_namespace": "codex-sessions"}}})


# -- variants ------------------------------------------------------------------------------


def test_external_redis_url() -> None:
    objects = helm.template({"redis": {"enabled": False, "externalUrl": "rediss://cache.example:6380/2"}})
    assert "codex-redis" not in names(objects, "Deployment") | names(objects, "Service")
    assert "codex-redis" not in names(objects, "NetworkPolicy")
    env = find(objects, "Deployment", "codex-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "REDIS_URL", "value": "rediss://cache.example:6380/2"}]
    egress = find(objects, "NetworkPolicy", "codex-gateway")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 6379}]} in egress


def test_external_redis_from_a_secret() -> None:
    objects = helm.template(
        {
            "redis": {"enabled": False, "existingSecret": "redis-auth", "existingSecretKey": "url"},
            "networkPolicy": {"externalRedis": {"cidrs": ["10.9.0.0/24"], "ports": [6380]}},
        }
    )
    env = find(objects, "Deployment", "codex-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "url"}}}]
    egress = find(objects, "NetworkPolicy", "codex-gateway")["spec"]["egress"]
    assert {
        "ports": [{"protocol": "TCP", "port": 6380}],
        "to": [{"ipBlock": {"cidr": "10.9.0.0/24"}}],
    } in egress


def _redis_container(objects: Objects) -> dict[str, Any]:
    return dict(find(objects, "Deployment", "codex-redis")["spec"]["template"]["spec"]["containers"][0])


def test_in_chart_redis_requires_a_generated_password(defaults: Objects) -> None:
    import base64

    secret = find(defaults, "Secret", "codex-redis-auth")
    assert secret["type"] == "Opaque" and set(secret["data"]) == {"password"}
    assert re.fullmatch(r"[A-Za-z0-9]{32}", base64.b64decode(secret["data"]["password"]).decode())
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    container = _redis_container(defaults)
    assert container["command"] == ["sh", "-c"]
    script, *args = container["args"]
    assert args == [
        "redis-server",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        "--dir",
        "/data",
    ]
    # The password is read from the environment by the script, never an argument.
    assert 'exec redis-server - "$@" <<EOF\nrequirepass $REDISCLI_AUTH\nEOF' in script
    assert container["env"] == [
        {
            "name": "REDISCLI_AUTH",
            "valueFrom": {"secretKeyRef": {"name": "codex-redis-auth", "key": "password"}},
        }
    ]
    assert container["readinessProbe"]["exec"]["command"] == ["sh", "-c", "redis-cli ping | grep -qx PONG"]
    # Two renders, two passwords: helm template has no cluster to look the Secret up in
    # (tests/integration/test_chart.py checks that an upgrade keeps it).
    again = find(helm.template(), "Secret", "codex-redis-auth")["data"]["password"]
    assert again != secret["data"]["password"]
    # Nothing in any pod spec holds the password.
    password = base64.b64decode(secret["data"]["password"]).decode()
    for obj in defaults:
        if obj["kind"] != "Secret":
            assert password not in json.dumps(obj), obj["metadata"]["name"]


def test_in_chart_redis_with_an_existing_password_secret() -> None:
    objects = helm.template({"redis": {"auth": {"existingSecret": "my-redis", "existingSecretKey": "pw"}}})
    assert "codex-redis-auth" not in names(objects, "Secret")
    ref = {"secretKeyRef": {"name": "my-redis", "key": "pw"}}
    assert _redis_container(objects)["env"] == [{"name": "REDISCLI_AUTH", "valueFrom": ref}]
    gateway = find(objects, "Deployment", "codex-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["env"][0] == {"name": "REDIS_PASSWORD", "valueFrom": ref}


def test_no_redis_at_all_means_no_redis_url() -> None:
    objects = helm.template({"redis": {"enabled": False}, "gateway": {"replicas": 1}})
    container = find(objects, "Deployment", "codex-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container


def test_network_policies(defaults: Objects) -> None:
    operator = find(defaults, "NetworkPolicy", "codex-operator")["spec"]
    assert operator["policyTypes"] == ["Ingress", "Egress"]
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert operator["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8080},
        {"protocol": "TCP", "port": 9443},
    ]
    gateway = find(defaults, "NetworkPolicy", "codex-gateway")["spec"]
    redis_peer = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/part-of": "codex-k8s-operator",
                "app.kubernetes.io/component": "redis",
            }
        }
    }
    assert {"to": [redis_peer], "ports": [{"protocol": "TCP", "port": 6379}]} in gateway["egress"]
    redis = find(defaults, "NetworkPolicy", "codex-redis")["spec"]
    assert redis["egress"] == [] and len(redis["ingress"]) == 1
    assert [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in redis["ingress"][0]["from"]
    ] == [
        "gateway",
        "model-proxy",
    ]
    restricted = helm.template(
        {
            "networkPolicy": {
                "gatewayFrom": [{"namespaceSelector": {"matchLabels": {"ingress": "yes"}}}],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                "apiServer": {"cidrs": ["172.18.0.2/32"], "ports": [6443]},
            }
        }
    )
    gateway = find(restricted, "NetworkPolicy", "codex-gateway")["spec"]
    assert gateway["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"ingress": "yes"}}}]
    assert gateway["ingress"][1]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert {
        "ports": [{"protocol": "TCP", "port": 6443}],
        "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
    } in gateway["egress"]
    # The runners' default-deny stays: their isolation does not hang on this switch.
    assert names(helm.template({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == {
        "codex-runner-default-deny"
    }


def test_webhook_generated_certificate(defaults: Objects, tmp_path: Path) -> None:
    import base64

    secret = find(defaults, "Secret", "codex-operator-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["namespace"] == "codex-system"
    webhook = find(defaults, "MutatingWebhookConfiguration", "codex-identity.codex.techsapo.io")
    assert {w["clientConfig"]["caBundle"] for w in webhook["webhooks"]} == {secret["data"]["ca.crt"]}
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(secret["data"][name]))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    sans = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for dns in (
        "codex-operator-webhook.codex-system.svc",
        "codex-operator-webhook.codex-system.svc.cluster.local",
    ):
        assert f"DNS:{dns}" in sans
    match = (
        subprocess.run(
            ["openssl", "x509", "-noout", "-pubkey", "-in", str(tmp_path / "tls.crt")],
            capture_output=True,
            text=True,
        ).stdout
        == subprocess.run(
            ["openssl", "pkey", "-pubout", "-in", str(tmp_path / "tls.key")], capture_output=True, text=True
        ).stdout
    )
    assert match, "tls.key is not the key of tls.crt"
    service = find(defaults, "Service", "codex-operator-webhook")["spec"]
    assert service["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    for hook in webhook["webhooks"]:
        assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 5


def test_webhook_existing_secret() -> None:
    objects = helm.template(
        {"webhook": {"certificate": {"existingSecret": "my-webhook-tls", "caBundle": "Q0EK"}}}
    )
    assert names(objects, "Secret") == {
        "codex-redis-auth",
        "codex-model-proxy-signing-key",
        "codex-agent-signing-key",
    }
    pod = find(objects, "Deployment", "codex-operator")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"] == {"secretName": "my-webhook-tls"}
    webhook = find(objects, "MutatingWebhookConfiguration", "codex-identity.codex.techsapo.io")
    assert {w["clientConfig"]["caBundle"] for w in webhook["webhooks"]} == {"Q0EK"}


def test_webhook_disabled() -> None:
    objects = helm.template({"webhook": {"enabled": False}})
    assert not names(objects, "MutatingWebhookConfiguration")
    assert names(objects, "Secret") == {
        "codex-redis-auth",
        "codex-model-proxy-signing-key",
        "codex-agent-signing-key",
    }
    assert "codex-operator-webhook" not in names(objects, "Service")
    args = args_of(objects, "codex-operator")
    assert not [a for a in args if a.startswith("--webhook")]
    assert "--trusted-requester" in args  # the policy's params still name the gateway
    ingress = find(objects, "NetworkPolicy", "codex-operator")["spec"]["ingress"][0]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_service_monitor() -> None:
    objects = helm.template({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    assert names(objects, "ServiceMonitor") == {"codex-operator", "codex-gateway", "codex-model-proxy"}
    for name in ("codex-operator", "codex-gateway", "codex-model-proxy"):
        monitor = find(objects, "ServiceMonitor", name)
        assert monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    without = helm.template({"serviceMonitor": {"enabled": True}, "modelProxy": {"enabled": False}})
    assert names(without, "ServiceMonitor") == {"codex-operator", "codex-gateway"}


def test_scheduling_values() -> None:
    placement = {
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    }
    objects = helm.template(
        {"operator": placement, "gateway": placement, "redis": placement, "modelProxy": placement}
    )
    for _, spec in pod_specs(objects):
        assert spec["nodeSelector"] == placement["nodeSelector"]
        assert spec["tolerations"] == placement["tolerations"]


def test_notes_tell_how_to_reach_the_gateway_and_approve() -> None:
    notes = helm.notes(values_files=[helm.KIND_VALUES])
    assert "http://127.0.0.1:8080/mcp" in notes
    # The model key goes where only the model proxy reads it.
    assert "kubectl -n codex-system create secret generic codex-model-api-key" in notes
    assert "kubectl -n codex-sessions patch cxar NAME --type merge" in notes
    assert '"decision":"Approved"' in notes and '"decision":"Denied"' in notes
    assert "create secret generic codex-gateway-tokens" in notes
    assert "create secret generic codex-model-api-key" in notes
    assert "port-forward service/codex-gateway" in helm.notes()
    assert "webhook is off" in helm.notes({"webhook": {"enabled": False}})
    assert "codex-redis-auth" not in helm.notes()  # generated by the chart
    own = helm.notes({"redis": {"auth": {"existingSecret": "my-redis"}}})
    assert "create secret generic my-redis --from-literal=password=" in own


# -- the values schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"replicas": "two"}}, "at '/gateway/replicas': got string, want integer"),
        ({"gateway": {"replicas": -1}}, "at '/gateway/replicas': minimum"),
        (
            {"images": {"operator": {"pullPolicy": "Sometimes"}}},
            "at '/images/operator/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ({"gateway": {"service": {"port": -1}}}, "at '/gateway/service/port': minimum: got -1, want 1"),
        ({"gateway": {"service": {"port": 70000}}}, "at '/gateway/service/port': maximum"),
        ({"gateway": {"service": {"type": "Ingress"}}}, "at '/gateway/service/type'"),
        ({"gateway": {"service": {"type": "NodePort", "nodePort": 80}}}, "at '/gateway/service/nodePort'"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"gateway": {"replica": 2}}, "at '/gateway': additional properties 'replica' not allowed"),
        ({"namespaces": {"sessions": "Codex_Sessions"}}, "at '/namespaces/sessions'"),
        ({"images": {"gateway": {"tag": "bad tag"}}}, "at '/images/gateway/tag'"),
        ({"redis": {"enabled": "yes"}}, "at '/redis/enabled': got string, want boolean"),
        ({"redis": {"externalUrl": "http://x"}}, "at '/redis/externalUrl'"),
        ({"redis": {"auth": {"existingSecret": "Bad_Name"}}}, "at '/redis/auth/existingSecret'"),
        ({"redis": {"auth": {"password": "hunter2"}}}, "additional properties 'password' not allowed"),
        ({"gateway": {"tokenReview": {"anyAudience": "yes"}}}, "at '/gateway/tokenReview/anyAudience'"),
        ({"networkPolicy": {"apiServer": {"ports": [0]}}}, "at '/networkPolicy/apiServer/ports/0'"),
        (
            {"networkPolicy": {"apiServer": {"cidrs": ["everywhere"]}}},
            "at '/networkPolicy/apiServer/cidrs/0'",
        ),
        ({"webhook": {"timeoutSeconds": 60}}, "at '/webhook/timeoutSeconds': maximum"),
        (
            {"operator": {"resources": {"limits": {"memory": "lots"}}}},
            "at '/operator/resources/limits/memory'",
        ),
        ({"serviceMonitor": {"interval": "often"}}, "at '/serviceMonitor/interval'"),
        # The configuration, checked against the schema generated from its pydantic models.
        (
            {"config": {"mcp": {"max_concurrent_sessions": 0}}},
            "at '/config/mcp/max_concurrent_sessions': minimum",
        ),
        (
            {"config": {"mcp": {"max_concurent_sessions": 5}}},
            "additional properties 'max_concurent_sessions'",
        ),
        ({"config": {"codex": {"sandbox": "none"}}}, "at '/config/codex/sandbox'"),
        # Codex refuses to redefine its built-in provider ids: refused at install, not at every turn.
        (
            {"config": {"kubernetes": {"model_endpoint": {"provider_id": "openai"}}}},
            "at '/config/kubernetes/model_endpoint/provider_id': 'not' failed",
        ),
        ({"gateway": {"tokenReview": {"enabled": "yes"}}}, "at '/gateway/tokenReview/enabled'"),
        (
            {"gateway": {"tokenReview": {"enabled": True, "audiences": ["a,b"]}}},
            "at '/gateway/tokenReview/audiences/0'",
        ),
        (
            {"config": {"unknown_table": {}}},
            "at '/config': additional properties 'unknown_table' not allowed",
        ),
        (
            {"config": {"security": {"approval_workflows": {"auto_approve_read_only": "yes"}}}},
            "at '/config/security/approval_workflows/auto_approve_read_only': got string, want boolean",
        ),
    ],
    ids=lambda v: json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else "",
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        helm.template(values)
    text = str(err.value)
    assert "values don't meet the specifications of the schema" in text
    assert message in text, text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis": {"externalUrl": "redis://x:6379"}},
            "redis.externalUrl / redis.existingSecret need redis.enabled=false",
        ),
        (
            {"redis": {"enabled": False, "externalUrl": "redis://x:6379", "existingSecret": "s"}},
            "set only one of redis.externalUrl and redis.existingSecret",
        ),
        (
            {"redis": {"enabled": False, "externalUrl": "redis://x:6379", "auth": {"existingSecret": "s"}}},
            "redis.auth is the password of the in-chart Redis",
        ),
        ({"gateway": {"tokenReview": {"enabled": True}}}, "gateway.tokenReview.enabled needs"),
        (
            {"gateway": {"tokenReview": {"enabled": True, "audiences": ["a"], "anyAudience": True}}},
            "set gateway.tokenReview.audiences or gateway.tokenReview.anyAudience, not both",
        ),
        (
            {"gateway": {"tokenReview": {"anyAudience": True}}},
            "gateway.tokenReview.anyAudience needs gateway.tokenReview.enabled",
        ),
        ({"webhook": {"certificate": {"existingSecret": "tls"}}}, "needs webhook.certificate.caBundle"),
        ({"webhook": {"certificate": {"caBundle": "Q0EK"}}}, "caBundle is only used with"),
        ({"gateway": {"service": {"nodePort": 30080}}}, "gateway.service.nodePort needs"),
        (
            {"namespaces": {"system": "codex", "sessions": "codex"}},
            "namespaces.system and namespaces.sessions must differ",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        helm.template(values)


def test_kind_values_pass_the_schema() -> None:
    objects = helm.template(values_files=[helm.KIND_VALUES])
    service = find(objects, "Service", "codex-gateway")
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30080


def test_values_schema_config_part_is_current() -> None:
    path = helm_schema.SCHEMA_FILE
    current = json.loads(path.read_text())
    assert helm_schema.render_schema(current) == current, "run `make generate`"
    assert helm_schema.outputs() == {path: path.read_text()}


def test_values_schema_regeneration_fixes_a_stale_config_part_and_keeps_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = json.loads(helm_schema.SCHEMA_FILE.read_text())
    stale = copy.deepcopy(good)
    stale["$defs"]["MCPConfig"]["properties"]["max_concurrent_sessions"]["maximum"] = 1
    path = tmp_path / "values.schema.json"
    path.write_text(json.dumps(stale, indent=2) + "\n")
    monkeypatch.setattr(helm_schema, "SCHEMA_FILE", path)
    regenerated = json.loads(helm_schema.outputs()[path])
    assert regenerated == good


def test_every_value_is_documented() -> None:
    """Each top-level key and each key one level down has a comment in values.yaml."""
    text = (helm.CHART_DIR / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = text.splitlines()
    for key in values:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"


# -- the build script and the Makefile's kind path ---------------------------------------


def test_build_helm_reports_a_cache_hit() -> None:
    helm.helm_binary()  # built once
    out = subprocess.run(
        ["bash", str(helm.BUILD_SCRIPT)], capture_output=True, text=True, check=True, timeout=60
    )
    assert "[helm] cache hit:" in out.stderr
    assert Path(out.stdout.strip()).is_file()


KIND_TARGETS = ("kind-up", "images", "kind-load", "kind-certs", "deploy", "e2e-kind", "undeploy", "kind-down")


def test_make_help_lists_the_targets() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(KIND_TARGETS) | {"dev", "test", "crds", "lint", "bench", "helm"} <= listed


def test_kind_targets_name_files_that_exist() -> None:
    """The kind path cannot run here (no kind, no Docker): its commands at least
    parse, and every repository file they use exists (test_chart.py applies them)."""
    targets = [t for t in KIND_TARGETS if t != "images"]
    out = subprocess.run(
        ["make", "-n", *targets],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needed in (
        "kind create cluster --name codex --config kind-config.yaml",
        "upgrade --install codex charts/codex-k8s-operator",
        "-f charts/codex-k8s-operator/values-kind.yaml -f hack/kind/e2e-values.yaml",
        "kind load image-archive",
        "hack/kind/smoke.py",
        "uninstall codex",
        "kind delete cluster --name codex",
    ):
        assert needed in text, needed
    paths = set(re.findall(r"(?:hack|charts|manifests)/[\w./-]+\.(?:yaml|py|sh)|kind-config\.yaml", text))
    assert paths
    for path in paths:
        assert (REPO / path).is_file(), path
    assert (REPO / "charts/codex-k8s-operator/crds").is_dir()


def test_sessions_namespace_denies_everything_by_default(defaults: Objects) -> None:
    """A runner pod whose own egress policy is missing has no network, not all of it."""
    (deny,) = [
        o
        for o in defaults
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "codex-runner-default-deny"
    ]
    assert deny["metadata"]["namespace"] == "codex-sessions"
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


# -- the model proxy ----------------------------------------------------------------------

WALL_BOUNCE = {
    "config": {
        "kubernetes": {
            "wall_bounce_providers": [
                {"provider_id": "second-opinion", "base_url": "https://llm.example/v1", "model": "m2"},
                {
                    "provider_id": "on-prem",
                    "base_url": "http://10.20.0.5:8000/v1",
                    "model": "m3",
                    "api_key_env": "ON_PREM_KEY",
                    "api_key_secret_name": "on-prem-key",
                    "api_key_secret_key": "token",
                    "egress_cidrs": ["10.20.0.5/32"],
                    "egress_ports": [8000],
                },
            ]
        }
    }
}


def rendered_config(objects: Objects) -> Any:
    from codex_api.config import parse_config

    return parse_config(config_toml(objects))


def container_env(objects: Objects, deployment: str) -> dict[str, dict[str, Any]]:
    container = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def secret_ref(env: dict[str, Any]) -> tuple[str, str]:
    ref = env["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_only_the_model_proxy_holds_provider_keys() -> None:
    """Every provider's key (named by the configuration, its defaults included) reaches
    the proxy from its Secret, and no other component of the chart gets one."""
    objects = helm.template(WALL_BOUNCE)
    config = rendered_config(objects)
    endpoints = [config.kubernetes.model_endpoint, *config.kubernetes.wall_bounce_providers]
    proxy = container_env(objects, "codex-model-proxy")
    expected = {e.api_key_env: (e.api_key_secret_name, e.api_key_secret_key) for e in endpoints}
    assert set(expected) == {"CODEX_MODEL_API_KEY", "CODEX_WB_SECOND_OPINION_API_KEY", "ON_PREM_KEY"}
    assert {name: secret_ref(proxy[name]) for name in expected} == expected
    # The proxy's own view of its upstreams reads exactly these variables.
    from codex_proxy.server import upstreams_from

    keys = {name: f"key-{name}" for name in expected}
    assert {u.key for u in upstreams_from(config, keys).values()} == set(keys.values())
    for deployment in ("codex-operator", "codex-gateway", "codex-redis"):
        assert not set(container_env(objects, deployment)) & set(expected), deployment
    # The operator and the proxy share the signing key, from the generated Secret.
    signing = config.model_proxy.signing_key_env
    assert secret_ref(proxy[signing]) == secret_ref(container_env(objects, "codex-operator")[signing])
    assert secret_ref(proxy[signing]) == ("codex-model-proxy-signing-key", "signing-key")
    generated = find(objects, "Secret", "codex-model-proxy-signing-key")
    import base64

    assert len(base64.b64decode(generated["data"]["signing-key"])) >= 32


def test_the_model_proxy_reaches_each_endpoint_as_a_runner_would() -> None:
    """The proxy's egress to the models is what the runners' own policy would allow
    (codex_operator.netpol_builder): the public internet without private or metadata
    addresses, a configured range, or in-cluster pods."""
    from codex_operator.netpol_builder import _model_endpoint_rules

    in_cluster = {
        "config": {
            "kubernetes": {
                "model_endpoint": {
                    "provider_id": "fake",
                    "base_url": "http://fake.codex-system.svc:18080/v1",
                    "egress_ports": [18080],
                    "in_cluster_namespace_labels": {"kubernetes.io/metadata.name": "codex-system"},
                    "in_cluster_pod_labels": {"app.kubernetes.io/name": "fake"},
                }
            }
        }
    }
    for values in ({}, WALL_BOUNCE, in_cluster):
        objects = helm.template(values)
        config = rendered_config(objects)
        egress = find(objects, "NetworkPolicy", "codex-model-proxy")["spec"]["egress"]
        for endpoint in (config.kubernetes.model_endpoint, *config.kubernetes.wall_bounce_providers):
            for rule in _model_endpoint_rules(endpoint):
                assert rule in egress, (values, rule)
    # Runners call the proxy, never the model: their egress peer is the proxy's pods.
    assert rendered_config(helm.template()).model_proxy.url


def test_the_model_proxy_policy_and_its_callers() -> None:
    objects = helm.template()
    proxy = find(objects, "NetworkPolicy", "codex-model-proxy")["spec"]
    # The API port to anyone (credentials decide); /metrics apart, from metricsFrom.
    assert proxy["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 8090}]},
        {"ports": [{"protocol": "TCP", "port": 9090}]},
    ]
    peer = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/part-of": "codex-k8s-operator",
                "app.kubernetes.io/component": "model-proxy",
            }
        }
    }
    operator = find(objects, "NetworkPolicy", "codex-operator")["spec"]
    assert {"to": [peer], "ports": [{"protocol": "TCP", "port": 8090}]} in operator["egress"]
    service = find(objects, "Service", "codex-model-proxy")["spec"]
    assert service["ports"] == [
        {"name": "http", "port": 8090, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
    ]
    args = args_of(objects, "codex-model-proxy")
    assert flag(args, "--port") == "8090" and flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--metrics-port") == "9090"
    rbac = find(objects, "ClusterRole", "codex-model-proxy")["rules"]
    assert rbac == [
        {"apiGroups": ["codex.techsapo.io"], "resources": ["codexsessions"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]


def test_model_proxy_flags_parse_with_the_real_cli() -> None:
    from codex_proxy.cli import parser

    args = parser().parse_args(args_of(helm.template(), "codex-model-proxy"))
    assert args.config == "/etc/codex/codex-mcp.toml" and args.port == 8090 and args.metrics_port == 9090


def test_without_the_model_proxy_runners_hold_the_key_again() -> None:
    objects = helm.template({"modelProxy": {"enabled": False}})
    assert not {o["metadata"]["name"] for o in objects if "model-proxy" in o["metadata"]["name"]}
    assert "model_proxy" not in tomllib.loads(config_toml(objects))
    assert "CODEX_PROXY_SIGNING_KEY" not in container_env(objects, "codex-operator")


def test_the_chart_sets_where_the_model_proxy_is() -> None:
    with pytest.raises(helm.HelmError, match=r"config\.model_proxy\.url is set by the chart from modelProxy"):
        helm.template({"config": {"model_proxy": {"url": "http://elsewhere:8090"}}})
    # An existing signing key Secret replaces the generated one.
    objects = helm.template(
        {"modelProxy": {"signingKey": {"existingSecret": "mine", "existingSecretKey": "k"}}}
    )
    assert "codex-model-proxy-signing-key" not in names(objects, "Secret")
    assert secret_ref(container_env(objects, "codex-operator")["CODEX_PROXY_SIGNING_KEY"]) == ("mine", "k")


# -- warm runners ------------------------------------------------------------------------

WARM = {"config": {"kubernetes": {"warm_runners": {"idle_seconds": 300}}}}


def test_warm_runners_are_on_by_default_and_off_at_zero(defaults: Objects) -> None:
    warm = rendered_config(defaults).kubernetes.warm_runners
    assert warm.enabled and warm.idle_seconds == 300 and warm.pool_size == 0
    assert "codex-agent-signing-key" in names(defaults, "Secret")
    off = helm.template({"config": {"kubernetes": {"warm_runners": {"idle_seconds": 0}}}})
    assert "codex-agent-signing-key" not in names(off, "Secret")
    assert rendered_config(off).kubernetes.warm_runners.enabled is False
    assert "agent" not in json.dumps(find(off, "Deployment", "codex-operator"))


def test_warm_runners_get_the_operator_as_their_only_peer_and_a_key_only_it_mounts(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    objects = helm.template(WARM)
    warm = rendered_config(objects).kubernetes.warm_runners
    assert warm.enabled and warm.idle_seconds == 300
    assert warm.operator_namespace_labels == {"kubernetes.io/metadata.name": "codex-system"}
    operator = find(objects, "Deployment", "codex-operator")
    assert warm.operator_pod_labels.items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    assert warm.signing_key_file == "/etc/codex-agent-key/private.pem"
    assert validate_config(config_toml(objects), tmp_path).returncode == 0
    secret = find(objects, "Secret", "codex-agent-signing-key")
    key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["private.pem"]), None)
    assert isinstance(key, Ed25519PrivateKey)
    spec = operator["spec"]["template"]["spec"]
    assert {"name": "agent-signing-key", "mountPath": "/etc/codex-agent-key", "readOnly": True} in spec[
        "containers"
    ][0]["volumeMounts"]
    mounted = [
        name
        for name, pod in pod_specs(objects)
        if any(
            (v.get("secret") or {}).get("secretName") == "codex-agent-signing-key"
            for v in pod.get("volumes", [])
        )
    ]
    assert mounted == ["codex-operator"]
    egress = find(objects, "NetworkPolicy", "codex-operator")["spec"]["egress"]
    agent = [rule for rule in egress if rule.get("ports") == [{"protocol": "TCP", "port": 8470}]]
    assert agent and agent[0]["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "codex-sessions"}
    }


def test_warm_runners_with_an_own_key_secret_and_a_conflicting_peer() -> None:
    values = {
        **WARM,
        "warmRunners": {"signingKey": {"existingSecret": "my-key", "existingSecretKey": "k.pem"}},
    }
    objects = helm.template(values)
    assert "codex-agent-signing-key" not in names(objects, "Secret")
    assert rendered_config(objects).kubernetes.warm_runners.signing_key_file == "/etc/codex-agent-key/k.pem"
    conflicting = {"config": {"kubernetes": {"warm_runners": {"idle_seconds": 60, "operator_cidrs": []}}}}
    helm.template(conflicting)  # a key the chart does not set is the user's
    wrong = {
        "config": {"kubernetes": {"warm_runners": {"idle_seconds": 60, "operator_pod_labels": {"app": "x"}}}}
    }
    with pytest.raises(helm.HelmError, match="operator_pod_labels is set by the chart"):
        helm.template(wrong)


def test_a_warm_pool_passes_through_the_chart_with_its_model_proxy(tmp_path: Path) -> None:
    values = {
        "config": {"kubernetes": {"warm_runners": {"idle_seconds": 300, "pool_sizes": {"read-only": 2}}}}
    }
    objects = helm.template(values)
    config = rendered_config(objects)
    assert config.kubernetes.warm_runners.pool_sizes == {"read-only": 2}
    assert config.model_proxy.url  # the chart's default proxy: what a pool needs
    assert validate_config(config_toml(objects), tmp_path).returncode == 0


def test_runner_pods_may_yield_to_the_install_s_own_pods() -> None:
    """Opt-in: with runnerPriorityClass, a class below the default that never
    preempts, and the operator gives its runner pods that class (the rendered
    config names it). Off by default: a preempted turn would run again."""
    defaults = helm.template()
    [config] = [o for o in defaults if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "codex-config"]
    assert (
        tomllib.loads(config["data"]["codex-mcp.toml"])["kubernetes"].get("runner_priority_class", "") == ""
    )
    on = helm.template(values={"runnerPriorityClass": {"create": True, "name": "codex-runners"}})
    [priority] = [o for o in on if o["kind"] == "PriorityClass"]
    assert priority["metadata"]["name"] == "codex-runners"
    assert priority["value"] < 0 and priority["preemptionPolicy"] == "Never"
    assert not priority.get("globalDefault")
    [config] = [o for o in on if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "codex-config"]
    assert (
        tomllib.loads(config["data"]["codex-mcp.toml"])["kubernetes"]["runner_priority_class"]
        == "codex-runners"
    )
    for obj in on:
        if obj["kind"] == "Deployment":
            assert "priorityClassName" not in obj["spec"]["template"]["spec"], obj["metadata"]["name"]
