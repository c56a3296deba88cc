"""The install on a real API server: the Helm chart (charts/codex-k8s-operator)
and the kustomize kind overlay render the same objects, both really apply
server-side (then are deleted again), their Deployments' pods pass Pod
Security `restricted`, and the RBAC of the installed chart is exactly the
table in docs/security.md, checked with `kubectl auth can-i --as`.

The control plane is shared by the whole test session, and an install holds
cluster-wide objects (CRDs, admission policies, the identity webhook,
ClusterRoles) and the codex-system namespace, which other tests' fixtures
create too (the operator's ServiceAccount, whose token they hold). So an
install here deletes afterwards only what it created: objects that existed
before are left in place (server-side apply with --force-conflicts takes
their fields over; the content is the same as the base's, which the
equivalence tests assert).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from codex_devenv import helm
from codex_devenv.admission_kit import ensure_param_keeper
from codex_devenv.assets import REPO_ROOT

SYSTEM, SESSIONS = "codex-system", "codex-sessions"
MANIFESTS = REPO_ROOT / "manifests"
SECURITY_DOC = REPO_ROOT / "docs" / "security.md"
KIND_DIR = REPO_ROOT / "hack" / "kind"
FIELD_MANAGER = "codex-chart-test"
HELM_ONLY_LABELS = {
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}
# The self-review APIs every authenticated user may call (system:basic-user).
BUILTIN_RESOURCES = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}
Objects = list[dict[str, Any]]
Key = tuple[str, str, str]


def key(obj: dict[str, Any]) -> Key:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def by_key(objects: Objects) -> dict[Key, dict[str, Any]]:
    out = {key(o): o for o in objects}
    assert len(out) == len(objects), "duplicate objects"
    return out


# -- rendering -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/ with the kind overlay's webhook certificate generated (as `make kind-certs` does)."""
    root = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("*.crt", "*.key"))
    subprocess.run(
        [
            "bash",
            str(REPO_ROOT / "hack" / "webhook-cert.sh"),
            str(root / "overlays" / "kind" / "webhook-tls"),
        ],
        check=True,
        capture_output=True,
    )
    return root


@pytest.fixture(scope="module")
def kind_overlay(manifests_copy: Path) -> Objects:
    return helm.kustomize(manifests_copy / "overlays" / "kind")


@pytest.fixture(scope="module")
def chart_kind() -> Objects:
    return helm.template(values_files=[helm.KIND_VALUES], include_crds=True)


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between the chart and kustomize: everything but helm's
    bookkeeping labels, the pods' config checksum, certificate bytes and TOML layout."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    labels = {k: v for k, v in meta.pop("labels", {}).items() if k not in HELM_ONLY_LABELS}
    if labels:
        meta["labels"] = labels
    if obj["kind"] == "Deployment":
        template_meta = obj["spec"]["template"]["metadata"]
        annotations = {
            k: v for k, v in template_meta.pop("annotations", {}).items() if not k.startswith("checksum/")
        }
        if annotations:
            template_meta["annotations"] = annotations
    if obj["kind"] == "Secret":
        obj["data"] = sorted(obj["data"])
    if obj["kind"] == "MutatingWebhookConfiguration":
        for hook in obj["webhooks"]:
            hook["clientConfig"].pop("caBundle", None)
    if obj["kind"] == "ConfigMap" and "codex-mcp.toml" in obj.get("data", {}):
        obj["data"]["codex-mcp.toml"] = tomllib.loads(obj["data"]["codex-mcp.toml"])
    return obj


def assert_same_install(chart: Objects, kustomized: Objects) -> None:
    a, b = by_key(chart), by_key(kustomized)
    assert sorted(a) == sorted(b), (
        f"only in the chart: {set(a) - set(b)}; only in kustomize: {set(b) - set(a)}"
    )
    for k in sorted(a):
        assert normalize(a[k]) == normalize(b[k]), f"{k} differs"


def test_kind_overlay_is_the_chart_with_kind_values(chart_kind: Objects, kind_overlay: Objects) -> None:
    assert_same_install(chart_kind, kind_overlay)


def test_kind_overlay_rbac_and_args_are_identical(chart_kind: Objects, kind_overlay: Objects) -> None:
    """Spelled out, although assert_same_install covers them: the rules, bindings and command lines."""
    a, b = by_key(chart_kind), by_key(kind_overlay)
    for k in a:
        if k[0] == "ClusterRole":
            assert a[k]["rules"] == b[k]["rules"], k
        if k[0] == "RoleBinding":
            assert (a[k]["roleRef"], a[k]["subjects"]) == (b[k]["roleRef"], b[k]["subjects"]), k
        if k[0] == "ServiceAccount":
            assert a[k].get("automountServiceAccountToken") == b[k].get("automountServiceAccountToken"), k
        if k[0] == "Deployment":
            for ca, cb in zip(
                a[k]["spec"]["template"]["spec"]["containers"],
                b[k]["spec"]["template"]["spec"]["containers"],
                strict=True,
            ):
                assert (ca.get("command"), ca["args"], ca.get("env")) == (
                    cb.get("command"),
                    cb["args"],
                    cb.get("env"),
                )
                assert (ca["image"], ca["imagePullPolicy"]) == (cb["image"], cb["imagePullPolicy"])


def test_kind_overlay_webhook_trusts_its_certificate(kind_overlay: Objects, chart_kind: Objects) -> None:
    for objects in (kind_overlay, chart_kind):
        objs = by_key(objects)
        secret = objs["Secret", SYSTEM, "codex-operator-webhook-tls"]
        ca = base64.b64decode(secret["data"]["ca.crt"])
        webhook = objs["MutatingWebhookConfiguration", "", "codex-identity.codex.techsapo.io"]
        for hook in webhook["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
        assert ca.startswith(b"-----BEGIN CERTIFICATE-----")


def test_kind_overlay_gateway_on_node_port_30080(kind_overlay: Objects) -> None:
    objs = by_key(kind_overlay)
    service = objs["Service", SYSTEM, "codex-gateway"]
    assert service["spec"]["type"] == "NodePort"
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert http["nodePort"] == 30080 and http["port"] == 8080
    kind_config = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    mappings = kind_config["nodes"][0]["extraPortMappings"]
    assert {
        "containerPort": 30080,
        "hostPort": 8080,
        "listenAddress": "127.0.0.1",
        "protocol": "TCP",
    } in mappings


def test_base_is_the_chart_defaults(manifests_copy: Path) -> None:
    """The base alone is the default install minus the webhook certificate, which overlays bring."""
    chart = [o for o in helm.template(include_crds=True) if o["kind"] != "Secret"]
    base = helm.kustomize(manifests_copy / "base")
    assert_same_install(chart, base)
    webhook = by_key(base)["MutatingWebhookConfiguration", "", "codex-identity.codex.techsapo.io"]
    assert all("caBundle" not in hook["clientConfig"] for hook in webhook["webhooks"])


def test_base_config_is_the_seed_plus_kubernetes(manifests_copy: Path, tmp_path: Path) -> None:
    config = by_key(helm.kustomize(manifests_copy / "base"))["ConfigMap", SYSTEM, "codex-config"]
    toml = tomllib.loads(config["data"]["codex-mcp.toml"])
    seed = tomllib.loads((REPO_ROOT / "config" / "codex-mcp.toml").read_text())
    assert {k: v for k, v in toml.items() if k != "kubernetes"} == seed
    path = tmp_path / "codex-mcp.toml"
    path.write_text(config["data"]["codex-mcp.toml"])
    out = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "codex-operator"), "config", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_kind_overlay_needs_the_generated_certificate(tmp_path: Path) -> None:
    """Without `make kind-certs`, kustomize says which file is missing."""
    root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("*.crt", "*.key"))
    with pytest.raises(helm.HelmError, match=r"webhook-tls/tls\.crt"):
        helm.kustomize(root / "overlays" / "kind")


# -- applying to the real API server ---------------------------------------------------------


class Install:
    """Server-side apply of rendered objects; uninstall() deletes only what this install created."""

    def __init__(self, control_plane: Any, objects: Objects) -> None:
        self.cp = control_plane
        self.objects = objects
        self.created: Objects = []
        self.apply_stderr = ""

    def _existing(self) -> set[Key]:
        out = self.cp.kubectl(
            "get", "--ignore-not-found", "-o", "json", "-f", "-", input=yaml.safe_dump_all(self.objects)
        )
        items = json.loads(out.stdout)["items"] if out.stdout.strip() else []
        return {key(i) for i in items}

    def apply(self) -> Install:
        ensure_param_keeper(self.cp)  # see admission_kit: keeps the API server's params informer alive
        before = self._existing()
        self.created = [o for o in self.objects if key(o) not in before]
        out = self.cp.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            "-",
            input=yaml.safe_dump_all(self.objects),
            check=False,
        )
        self.apply_stderr = out.stderr
        assert out.returncode == 0, out.stderr
        return self

    def uninstall(self) -> None:
        if not self.created:
            return
        # Cluster-scoped admission objects first (no window where a half-removed install
        # refuses requests), namespaces last.
        order = {"MutatingWebhookConfiguration": 0, "ValidatingAdmissionPolicyBinding": 0, "Namespace": 2}
        docs = sorted(self.created, key=lambda o: order.get(o["kind"], 1))
        self.cp.kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
        )


@pytest.fixture
def install(control_plane: Any) -> Iterator[Any]:
    made: list[Install] = []

    def do(objects: Objects) -> Install:
        inst = Install(control_plane, objects)
        made.append(inst)
        return inst.apply()

    yield do
    for inst in reversed(made):
        inst.uninstall()


def assert_installed(control_plane: Any, inst: Install) -> None:
    """Every object is on the server, nothing warned, and each Deployment's pods were admitted."""
    assert "Warning" not in inst.apply_stderr, inst.apply_stderr
    out = control_plane.kubectl("get", "-o", "json", "-f", "-", input=yaml.safe_dump_all(inst.objects))
    assert {key(i) for i in json.loads(out.stdout)["items"]} == {key(o) for o in inst.objects}
    deployments = [o for o in inst.objects if o["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        ns, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        deadline = time.monotonic() + 60
        while True:
            pods = json.loads(
                control_plane.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
            )
            if pods["items"]:
                break
            events = control_plane.kubectl(
                "get", "events", "-n", ns, "--field-selector", "reason=FailedCreate", "-o", "name"
            ).stdout
            assert time.monotonic() < deadline, (
                f"no pod of {ns}/{name} was created; FailedCreate events: {events}"
            )
            time.sleep(0.5)
        events = control_plane.kubectl(
            "get", "events", "-n", ns, "--field-selector", "reason=FailedCreate", "-o", "json"
        ).stdout
        refused = [e["message"] for e in json.loads(events)["items"] if name in e["involvedObject"]["name"]]
        assert not refused, refused
    namespace = json.loads(control_plane.kubectl("get", "namespace", SESSIONS, "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kind_overlay_applies_server_side(control_plane: Any, install: Any, kind_overlay: Objects) -> None:
    inst = install(kind_overlay)
    assert_installed(control_plane, inst)


def test_chart_with_kind_and_e2e_values_applies_with_the_e2e_extras(control_plane: Any, install: Any) -> None:
    """What `make e2e-kind` applies: the chart with the kind and e2e values, the
    in-cluster fake model, and the two Secrets it creates."""
    objects = helm.template(values_files=[helm.KIND_VALUES, KIND_DIR / "e2e-values.yaml"], include_crds=True)
    config = by_key(objects)["ConfigMap", SYSTEM, "codex-config"]["data"]["codex-mcp.toml"]
    endpoint = tomllib.loads(config)["kubernetes"]["model_endpoint"]
    fake_model = [d for d in yaml.safe_load_all((KIND_DIR / "fake-model.yaml").read_text()) if d]
    service = by_key(fake_model)["Service", SYSTEM, "codex-fake-model"]
    assert (
        endpoint["base_url"]
        == f"http://codex-fake-model.{SYSTEM}.svc:{service['spec']['ports'][0]['port']}/v1"
    )
    pod_labels = by_key(fake_model)["Deployment", SYSTEM, "codex-fake-model"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert endpoint["in_cluster_pod_labels"].items() <= pod_labels.items()
    secrets = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "codex-model-api-key", "namespace": SESSIONS},
            "stringData": {"api-key": "not-a-real-key"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "codex-gateway-tokens", "namespace": SYSTEM},
            "stringData": {"tokens.yaml": "e2e-token: alice\n"},
        },
    ]
    inst = install(objects + fake_model + secrets)
    assert_installed(control_plane, inst)


# -- RBAC of the installed chart -------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_chart(control_plane: Any) -> Iterator[Install]:
    inst = Install(control_plane, helm.template(include_crds=True))
    inst.apply()
    try:
        yield inst
    finally:
        inst.uninstall()


def test_chart_applies_server_side(control_plane: Any, installed_chart: Install) -> None:
    assert_installed(control_plane, installed_chart)


@pytest.mark.parametrize("namespace", [SYSTEM, SESSIONS])
def test_namespaces_enforce_pod_security_restricted(
    control_plane: Any, installed_chart: Install, namespace: str
) -> None:
    """The control for assert_installed's "pods were created": a root pod is refused there."""
    out = control_plane.kubectl(
        "run",
        "root-probe",
        "-n",
        namespace,
        "--image=busybox",
        "--restart=Never",
        "--dry-run=server",
        "--overrides",
        json.dumps({"spec": {"securityContext": {"runAsUser": 0}}}),
        check=False,
    )
    assert out.returncode != 0 and 'violates PodSecurity "restricted:latest"' in out.stderr, out.stderr


def rbac_table() -> list[dict[str, str]]:
    text = SECURITY_DOC.read_text()
    section = text.split("\n## RBAC\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["subject", "verb", "resource", "namespace", "allowed"], header
    assert set(rows[1].replace("|", "").strip()) <= {"-", " "}
    out = []
    for row in rows[2:]:
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        out.append(dict(zip(header, cells, strict=True)))
    return out


ROWS = rbac_table()


def test_rbac_table_is_well_formed() -> None:
    subjects = {r["subject"] for r in ROWS}
    assert subjects == {
        f"system:serviceaccount:{SYSTEM}:codex-operator",
        f"system:serviceaccount:{SYSTEM}:codex-gateway",
        f"system:serviceaccount:{SESSIONS}:codex-runner",
    }
    assert {r["allowed"] for r in ROWS} == {"yes", "no"}
    assert len({(r["subject"], r["verb"], r["resource"], r["namespace"]) for r in ROWS}) == len(ROWS)


def can_i(control_plane: Any, subject: str, verb: str, resource: str, namespace: str) -> str:
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={subject}"]
    if sub:
        args += ["--subresource", sub]
    if namespace == "(all)":
        args.append("--all-namespaces")
    elif namespace != "(cluster)":
        args += ["-n", namespace]
    out = control_plane.kubectl(*args, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), out.stderr
    return str(answer)


@pytest.mark.parametrize(
    "row",
    ROWS,
    ids=[f"{r['subject'].rsplit(':', 1)[1]}-{r['verb']}-{r['resource']}-{r['namespace']}" for r in ROWS],
)
def test_rbac_row(control_plane: Any, installed_chart: Install, row: dict[str, str]) -> None:
    assert (
        can_i(control_plane, row["subject"], row["verb"], row["resource"], row["namespace"]) == row["allowed"]
    )


def listed_rules(control_plane: Any, subject: str, namespace: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs `kubectl auth can-i --list` grants, without the self-review APIs."""
    out = control_plane.kubectl("auth", "can-i", "--list", f"--as={subject}", "-n", namespace, "--no-headers")
    pairs = set()
    for line in out.stdout.splitlines():
        match = re.match(r"^(\S+)\s+\[\]\s+\[[^\]]*\]\s+\[([^\]]*)\]\s*$", line)
        if not match:
            continue  # non-resource URLs
        resource = match.group(1).replace(".codex.techsapo.io", "")
        if resource in BUILTIN_RESOURCES:
            continue
        pairs |= {(resource, verb) for verb in match.group(2).split()}
    return pairs


@pytest.mark.parametrize(
    "subject",
    sorted({r["subject"] for r in ROWS}),
    ids=lambda s: s.rsplit(":", 1)[1],
)
@pytest.mark.parametrize("namespace", [SESSIONS, SYSTEM, "default"])
def test_rbac_yes_rows_are_everything(
    control_plane: Any, installed_chart: Install, subject: str, namespace: str
) -> None:
    expected = {
        (r["resource"], r["verb"])
        for r in ROWS
        if r["subject"] == subject and r["namespace"] == namespace and r["allowed"] == "yes"
    }
    assert listed_rules(control_plane, subject, namespace) == expected


def test_runner_token_is_never_mounted(control_plane: Any, installed_chart: Install) -> None:
    account = json.loads(
        control_plane.kubectl("get", "serviceaccount", "codex-runner", "-n", SESSIONS, "-o", "json").stdout
    )
    assert account["automountServiceAccountToken"] is False


# -- `make deploy`'s helm path, on a control plane of its own ----------------------------------


@pytest.fixture(scope="module")
def own_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """helm refuses to adopt objects it did not create, and the shared control
    plane may hold some (codex-system, the operator's ClusterRole): `helm
    install` gets an empty API server of its own."""
    from codex_devenv.assets import ensure_binaries
    from codex_devenv.controlplane import ControlPlane

    cp = ControlPlane(tmp_path_factory.mktemp("helm-control-plane"), ensure_binaries())
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


def webhook_ca(cp: Any) -> tuple[str, set[str]]:
    secret = json.loads(
        cp.kubectl("get", "secret", "codex-operator-webhook-tls", "-n", SYSTEM, "-o", "json").stdout
    )
    hooks = json.loads(
        cp.kubectl(
            "get", "mutatingwebhookconfiguration", "codex-identity.codex.techsapo.io", "-o", "json"
        ).stdout
    )
    return secret["data"]["ca.crt"], {h["clientConfig"]["caBundle"] for h in hooks["webhooks"]}


def test_helm_install_upgrade_uninstall(own_control_plane: Any) -> None:
    """`make deploy` against a real API server: helm upgrade --install with the kind
    values (CRDs from the chart's crds/), the Secrets it creates, an upgrade that
    keeps the webhook certificate, and helm uninstall."""
    cp = own_control_plane
    kubeconfig = str(cp.kubeconfig("admin"))
    base = ["--kubeconfig", kubeconfig, "--namespace", "default"]
    kind_values = ["-f", str(helm.KIND_VALUES)]
    out = helm.run("upgrade", "--install", helm.RELEASE, str(helm.CHART_DIR), *base, *kind_values)
    assert "STATUS: deployed" in out.stdout, out.stdout + out.stderr
    assert "http://127.0.0.1:8080/mcp" in out.stdout  # NOTES
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/codexsessions.codex.techsapo.io")
    for secret in (
        ["-n", SYSTEM, "codex-gateway-tokens", "--from-literal=tokens.yaml=t0ken: alice"],
        ["-n", SESSIONS, "codex-model-api-key", "--from-literal=api-key=not-a-real-key"],
    ):
        cp.kubectl("create", "secret", "generic", *secret)
    ca, bundles = webhook_ca(cp)
    assert bundles == {ca}
    deadline = time.monotonic() + 60
    while len(json.loads(cp.kubectl("get", "pods", "-n", SYSTEM, "-o", "json").stdout)["items"]) < 3:
        assert time.monotonic() < deadline, cp.kubectl("get", "events", "-n", SYSTEM).stdout
        time.sleep(0.5)

    out = helm.run(
        "upgrade", helm.RELEASE, str(helm.CHART_DIR), *base, *kind_values, "--set", "gateway.replicas=2"
    )
    assert "REVISION: 2" in out.stdout
    assert webhook_ca(cp) == (ca, {ca}), "an upgrade must keep the webhook's certificate (lookup)"
    replicas = cp.kubectl(
        "get", "deployment", "codex-gateway", "-n", SYSTEM, "-o", "jsonpath={.spec.replicas}"
    )
    assert replicas.stdout == "2"

    helm.run("uninstall", helm.RELEASE, *base, "--wait", "--timeout", "180s")
    namespaces = cp.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert f"namespace/{SYSTEM}" not in namespaces and f"namespace/{SESSIONS}" not in namespaces
    leftovers = cp.kubectl(
        "get",
        "clusterroles,mutatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        "app.kubernetes.io/part-of=codex-k8s-operator",
        "-o",
        "name",
    ).stdout.split()
    assert leftovers == []
    # Helm never deletes CRDs (they hold everyone's sessions).
    assert cp.kubectl("get", "crd", "codexsessions.codex.techsapo.io", check=False).returncode == 0
