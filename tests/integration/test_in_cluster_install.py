"""The chart as a user installs it, running in the cluster (codex_devenv.in_cluster):
helm install with the project's images imported into the node, the operator
(with its webhook), the gateway and Redis as pods, Ready under Pod Security
`restricted` and NetworkPolicy enforced (the chart's own policies for its
pods, the operator's for runners). Then the same smoke `make e2e-kind` runs
(hack/kind/smoke.py): a session through the gateway's Service to a result,
and a full-access session that its requester cannot approve and another user
does, with kubectl and their own credentials.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from codex_api import names
from codex_api.config import CodexMCPConfig
from codex_api.model_credential import SessionRef
from codex_devenv.in_cluster import SESSIONS, SYSTEM, InClusterInstall, smoke
from codex_devenv.netprobe import connects, eventually, pod_ip, probe_pod, reaches, resolves, serve
from codex_devenv.process import wait_for
from codex_devenv.stand_in_internet import PORTS as INTERNET_PORTS
from codex_devenv.stand_in_internet import SERVER_IP
from codex_operator.model_access import model_access
from codex_operator.netpol_builder import build_network_policy

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def install(
    node_cluster: Any, netpol_engine: Any, volumes: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InClusterInstall]:
    """The install; `volumes` binds the persistent workspaces' claims (what
    kind's local-path provisioner does there)."""
    cp, node, _ = node_cluster
    installed = InClusterInstall(cp, node, tmp_path_factory.mktemp("in-cluster"))
    before = _uids(cp)
    try:
        installed.install()
        print(f"\n[in-cluster] installed: {installed.timings}")
        yield installed
    finally:
        installed.uninstall()
    # What existed before (the session fixtures' namespace and ServiceAccounts,
    # whose tokens are in use) is still there, the same objects; nothing runs.
    after = _uids(cp)
    assert {k: v for k, v in after.items() if k in before} == before
    left = cp.kubectl("-n", SYSTEM, "get", "deployments,services", "-o", "name").stdout.split()
    assert not [name for name in left if "codex-" in name], left


def _uids(cp: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, ns in (("namespace", None), ("serviceaccounts", SYSTEM), ("clusterroles", None)):
        args = ["get", kind, "-o", "json"] + (["-n", ns] if ns else [])
        found = cp.kubectl(*args, check=False)
        if found.returncode != 0:
            continue
        for item in json.loads(found.stdout)["items"]:
            if item["metadata"]["name"].startswith("codex-"):
                out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["uid"]
    return out


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def test_every_component_is_a_ready_pod_under_restricted(install: InClusterInstall) -> None:
    cp = install.control_plane
    for ns in (SYSTEM, SESSIONS):
        labels = json.loads(cp.kubectl("get", "namespace", ns, "-o", "json").stdout)["metadata"]["labels"]
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels
    pods = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p for p in install.pods()}
    for component in ("operator", "gateway", "redis", "model-proxy"):
        pod = pods.get(component)
        assert pod is not None, f"no {component} pod: {sorted(pods)}"
        assert pod["spec"]["nodeName"] == install.node.name
        assert _ready(pod), pod["status"]
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["image"].startswith("localhost/codex-"), container["image"]
        restarts = sum(s.get("restartCount", 0) for s in pod["status"]["containerStatuses"])
        assert restarts == 0, (component, install.logs(f"codex-{component}"))
    # in-cluster config: the operator's pod has no kubeconfig, only its ServiceAccount token
    operator = pods["operator"]["spec"]
    assert not any(
        "kubeconfig" in " ".join(c.get("args", []) + c.get("command", [])) for c in operator["containers"]
    )
    assert operator["serviceAccountName"] == "codex-operator"


def test_the_kind_smoke_passes_against_the_in_cluster_install(install: InClusterInstall) -> None:
    out = smoke(install, requester="alice", approver="bob")
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{install.diagnose()}"
    assert "e2e-kind: ok" in out.stdout
    assert "own approval refused" in out.stdout
    assert "Approved by bob" in out.stdout  # the webhook, reached through its Service, stamped the decider
    sessions = json.loads(
        install.control_plane.kubectl("-n", SESSIONS, "get", "codexsessions", "-o", "json").stdout
    )
    phases = sorted(s["status"]["phase"] for s in sessions["items"])
    assert phases == ["Succeeded", "Succeeded"], phases


def test_the_smoke_turns_went_through_the_model_proxy_and_no_runner_held_the_key(
    install: InClusterInstall,
) -> None:
    """The smoke's turns were answered through the proxy (its meter counted them), and
    nothing in the sessions namespace carries or names the model key."""
    cp = install.control_plane
    metered = sum(
        install.metric(pod["metadata"]["name"], "codex_proxy_requests_total", 'outcome="metered"')
        for pod in install.pods_of("model-proxy")
    )
    assert metered >= 2, "the smoke's two turns did not reach the model through the proxy"
    everything = cp.kubectl("-n", SESSIONS, "get", "pods,codexsessions,events,secrets", "-o", "json").stdout
    assert install.model_key not in everything
    assert "codex-model-api-key" not in everything
    system_pods = json.dumps(install.pods())
    # Only the proxy's pod spec names the key's Secret.
    holders = [
        p["metadata"]["labels"].get("app.kubernetes.io/component")
        for p in install.pods()
        if "codex-model-api-key" in json.dumps(p["spec"])
    ]
    assert holders and set(holders) == {"model-proxy"}, holders
    assert install.model_key not in system_pods


def test_the_gateway_reports_redis_and_the_api_server_healthy(install: InClusterInstall) -> None:
    import urllib.request

    token = next(iter(install.tokens))
    request = urllib.request.Request(
        f"{install.gateway_url}/mcp/codex/health", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        health = json.load(resp)
    assert resp.status == 200, health
    assert health["kubernetes"]["reachable"] is True, health
    assert health["redis"]["configured"] is True and health["redis"]["reachable"] is True, health


LEVELS = ("read-only", "isolated", "full-access", "wall-bounce")


def _install_config(install: InClusterInstall) -> CodexMCPConfig:
    cm = json.loads(
        install.control_plane.kubectl("-n", SYSTEM, "get", "configmap", "codex-config", "-o", "json").stdout
    )
    return CodexMCPConfig.model_validate(tomllib.loads(cm["data"]["codex-mcp.toml"]))


def _component_ip(install: InClusterInstall, component: str) -> str:
    pod = next(
        p for p in install.pods() if p["metadata"]["labels"].get("app.kubernetes.io/component") == component
    )
    return str(pod["status"]["podIP"])


@pytest.fixture(scope="module")
def prober(install: InClusterInstall) -> Iterator[tuple[str, str]]:
    """A pod no policy restricts, outside the install's namespaces: (namespace, pod)."""
    cp = install.control_plane
    ns = f"free-{int(time.time() * 1000) % 10**8}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl(
        "create", "-n", ns, "-f", "-", input=json.dumps(probe_pod("free", serve(9090), {"role": "free"}))
    )
    pod_ip(cp, ns, "free")
    yield ns, "free"
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("level", LEVELS)
def test_no_runner_reaches_the_gateway_redis_or_the_operator(
    install: InClusterInstall, prober: tuple[str, str], internet: Any, level: str
) -> None:
    """A pod with the operator's own policy for `level` (built from the installed
    configuration, through the model proxy as the operator sees it) in the
    sessions namespace, under the chart's default deny: it reaches DNS and the
    proxy, not the model itself, nor anything else of the install."""
    cp = install.control_plane
    config = _install_config(install)
    session = f"probe-{level}"
    ref = SessionRef(SESSIONS, session, "00000000-0000-0000-0000-000000000000")
    endpoint = model_access(config, None, ref, b"k" * 32).endpoint
    assert endpoint.base_url.startswith("http://codex-model-proxy."), endpoint.base_url
    policy = build_network_policy(
        session_name=session,
        namespace=SESSIONS,
        session_uid="00000000-0000-0000-0000-000000000000",
        conversation=session,
        sandbox="read-only" if level == "wall-bounce" else level,
        endpoint=endpoint,
        extra_endpoints=[endpoint] if level == "wall-bounce" else [],
    )
    del policy["metadata"]["ownerReferences"]
    cp.kubectl("apply", "-f", "-", input=json.dumps(policy))
    runner = f"runner-{session}"
    pod = probe_pod(runner, serve(9090), {names.LABEL_SESSION: session, names.LABEL_POLICY: session})
    cp.kubectl("create", "-n", SESSIONS, "-f", "-", input=json.dumps(pod))
    pod_ip(cp, SESSIONS, runner)
    free_ns, free = prober
    gateway, redis, operator, proxy = (
        _component_ip(install, c) for c in ("gateway", "redis", "operator", "model-proxy")
    )
    fake_model = next(
        p["status"]["podIP"]
        for p in install.pods()
        if p["metadata"]["labels"].get("app.kubernetes.io/name") == "codex-fake-model"
    )
    try:
        # What the policy allows: the model proxy (in-cluster, by labels) and DNS.
        assert eventually(lambda: connects(cp, SESSIONS, runner, proxy, 8090), True), "the model proxy"
        assert eventually(lambda: resolves(cp, SESSIONS, runner), True), "DNS"
        # Positive controls: each target is up and reachable from where its own policy allows.
        targets = {
            "model itself": (fake_model, 18080),
            "gateway": (gateway, 8080),
            "operator metrics": (operator, 8080),
            "webhook": (operator, 9443),
        }
        for what, (ip, port) in targets.items():
            assert reaches(cp, free_ns, free, ip, port), f"positive control: {what}"
        gateway_pod = next(
            p
            for p in install.pods()
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
        )
        from_gateway = cp.kubectl(
            "exec", "-n", SYSTEM, gateway_pod["metadata"]["name"], "--", "python3", "-c",
            f"import socket; socket.create_connection(({redis!r}, 6379), 2); print('OPEN')",
            check=False,
        )  # fmt: skip
        assert "OPEN" in from_gateway.stdout, (
            f"positive control: Redis from the gateway: {from_gateway.stderr}"
        )
        # The runner reaches none of them, nor the gateway's Service.
        service = json.loads(cp.kubectl("-n", SYSTEM, "get", "service", "codex-gateway", "-o", "json").stdout)
        targets["redis"] = (redis, 6379)
        targets["gateway Service"] = (service["spec"]["clusterIP"], 8080)
        assert reaches(cp, free_ns, free, *targets["gateway Service"]), (
            "positive control: the gateway's Service"
        )
        for what, (ip, port) in targets.items():
            assert not connects(cp, SESSIONS, runner, ip, port), f"{level}: the runner reached the {what}"
        # The stand-in internet (443 included, where a hosted model would be): only
        # full-access's public rule reaches it; the others have the proxy and DNS only.
        for port in INTERNET_PORTS:
            assert reaches(cp, free_ns, free, SERVER_IP, port), f"positive control: the internet :{port}"
            reached = connects(cp, SESSIONS, runner, SERVER_IP, port)
            assert reached == (level == "full-access"), f"{level}: the internet on {port}: {reached}"
    finally:
        cp.kubectl("-n", SESSIONS, "delete", "pod", runner, "--wait=false", check=False)
        cp.kubectl("-n", SESSIONS, "delete", "networkpolicy", policy["metadata"]["name"], check=False)


# --------------------------------------------------------------------------- faults
def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error and result.structured_content is not None, result.content
    return dict(result.structured_content)


def _sessions(install: InClusterInstall) -> dict[str, dict[str, Any]]:
    out = install.control_plane.kubectl("-n", SESSIONS, "get", "codexsessions", "-o", "json")
    return {s["metadata"]["name"]: s for s in json.loads(out.stdout)["items"]}


def _runner_pods(install: InClusterInstall, session: str) -> list[str]:
    out = install.control_plane.kubectl(
        "-n", SESSIONS, "get", "pods", "-l", f"{names.LABEL_SESSION}={session}", "-o", "name"
    )
    return out.stdout.split()


def _wait(check: Any, timeout: float, what: str, install: InClusterInstall | None = None) -> None:
    """wait_for; with `install`, a timeout says what the cluster looked like."""
    try:
        wait_for(check, timeout=timeout, what=what, interval=0.1)
    except TimeoutError as err:
        if install is None:
            raise
        raise AssertionError(f"{err}\n{install.diagnose()}") from None


@pytest.fixture(scope="module")
def slow_model(install: InClusterInstall) -> Iterator[None]:
    """The in-cluster fake model with 1.5 s between its answer's events, so a
    turn lasts several seconds: long enough to break something in the middle."""
    cp = install.control_plane
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "fake-model", "args": ["--delay", "1.5"]}]}}}
    }
    cp.kubectl("-n", SYSTEM, "patch", "deployment", "codex-fake-model", "-p", json.dumps(patch))
    install.rollout("codex-fake-model")
    yield
    cp.kubectl("-n", SYSTEM, "patch", "deployment", "codex-fake-model", "--type", "json", "-p",
               json.dumps([{"op": "remove", "path": "/spec/template/spec/containers/0/args"}]))  # fmt: skip
    install.rollout("codex-fake-model")


async def _start_turns(
    install: InClusterInstall, client: Any, count: int, tag: str
) -> tuple[list[Any], set[str]]:
    """`count` codex calls in flight; returns (their tasks, the new session names)."""
    import asyncio

    before = set(_sessions(install))
    tasks = [asyncio.create_task(client.call_tool("codex", {"prompt": f"{tag} {i}"})) for i in range(count)]
    deadline = time.monotonic() + 60
    while True:
        new = await asyncio.to_thread(lambda: set(_sessions(install)) - before)
        if len(new) == count:
            return tasks, new
        # A call that failed will never make its session: say how, at once.
        failed = [
            repr(t.exception()) if t.exception() else str(t.result().content)[:500]
            for t in tasks
            if t.done() and (t.exception() is not None or t.result().is_error)
        ]
        if failed or time.monotonic() > deadline:
            diagnosis = await asyncio.to_thread(install.diagnose)
            raise AssertionError(f"{len(new)} of {count} sessions; failed calls: {failed}\n{diagnosis}")
        await asyncio.sleep(0.2)


async def test_deleting_the_operator_pod_mid_turn_finishes_every_turn_once(
    install: InClusterInstall, slow_model: None
) -> None:
    import asyncio

    cp = install.control_plane
    async with install.client("alice") as alice:
        tasks, started = await _start_turns(install, alice, 3, "operator fault")

        def running() -> bool:
            sessions = _sessions(install)
            return all((sessions[n].get("status") or {}).get("phase") == "Running" for n in started)

        await asyncio.to_thread(_wait, running, 90, "the turns to run")
        # Two replicas: delete the one that leads; the other takes the Lease over.
        old = install.operator_leader()
        assert old and old in {p["metadata"]["name"] for p in install.pods()}, old
        t0 = time.monotonic()
        cp.kubectl("-n", SYSTEM, "delete", "pod", old, "--wait=false")
        await asyncio.to_thread(
            _wait, lambda: install.operator_leader() not in (None, old), 60, "another replica to lead"
        )
        takeover = time.monotonic() - t0
        await asyncio.to_thread(install.rollout, "codex-operator")
        back = time.monotonic() - t0
        await asyncio.gather(*tasks, return_exceptions=True)

        def finished() -> bool:
            sessions = _sessions(install)
            return all((sessions[n].get("status") or {}).get("phase") == "Succeeded" for n in started)

        await asyncio.to_thread(_wait, finished, 180, "every turn to succeed", install)
        print(
            f"\n[in-cluster] leader pod deleted: another replica led after {takeover:.1f}s, both Ready after {back:.1f}s"
        )
        for name in started:
            status = _sessions(install)[name]["status"]
            assert status.get("attempts") == 1, (name, status)
            assert len(_runner_pods(install, name)) == 1, (name, _runner_pods(install, name))
            info = _structured(await alice.call_tool("codex-session-info", {"session_id": name}))
            assert info["session"]["status"] == "completed", info


async def test_killing_a_gateway_replica_with_calls_in_flight_loses_no_result_nor_the_session(
    install: InClusterInstall, slow_model: None
) -> None:
    """Two gateway replicas behind the Service, no affinity: kube-proxy sends each
    connection to either. Force-kill the one holding the client's MCP session
    while five calls run: the turns finish, and the same client, in the same
    session, reads every result through the other replica."""
    import asyncio

    cp = install.control_plane
    gateways = [p["metadata"]["name"] for p in install.pods_of("gateway")]
    assert len(gateways) == 2, gateways
    async with install.client("alice", mode="legacy") as alice:
        tasks, started = await _start_turns(install, alice, 5, "gateway fault")
        held = {pod: install.metric(pod, "codex_gateway_mcp_connections_open") for pod in gateways}
        victim = max(gateways, key=lambda pod: held[pod])
        survivor = next(pod for pod in gateways if pod != victim)
        victim_ip = next(p for p in install.pods_of("gateway") if p["metadata"]["name"] == victim)["status"][
            "podIP"
        ]
        cp.kubectl("-n", SYSTEM, "delete", "pod", victim, "--grace-period=0", "--force", "--wait=false")
        await asyncio.gather(*tasks, return_exceptions=True)  # those the victim served break
        await asyncio.to_thread(
            _wait,
            lambda: victim_ip not in install.endpoints("codex-gateway"),
            30,
            "the Service to drop the pod",
        )
        await asyncio.sleep(2)  # kube-proxy's sync after the EndpointSlice change

        def done() -> bool:
            sessions = _sessions(install)
            return all((sessions[n].get("status") or {}).get("phase") == "Succeeded" for n in started)

        await asyncio.to_thread(_wait, done, 180, "every turn to succeed")
        for name in started:
            info = _structured(await alice.call_tool("codex-session-info", {"session_id": name}))
            assert info["session"]["status"] == "completed" and info["session"]["response"], info
        adopted = install.metric(survivor, "codex_gateway_mcp_sessions_adopted_total")
        assert install.metric(survivor, "codex_gateway_mcp_connections_open") >= 1
    print(
        f"\n[in-cluster] gateway {victim} killed (held {held}); {survivor} adopted {adopted:.0f} session(s)"
    )
    await asyncio.to_thread(_wait, lambda: len(install.pods_of("gateway")) == 2, 90, "a second gateway again")
    await asyncio.to_thread(install.rollout, "codex-gateway")


async def test_restarting_redis_under_load_keeps_calls_working_and_limits_resume(
    install: InClusterInstall,
) -> None:
    import asyncio

    cp = install.control_plane
    errors: list[Any] = []
    calls = 0
    stop = asyncio.Event()

    async def load(client: Any) -> None:
        nonlocal calls
        while not stop.is_set():
            result = await client.call_tool("codex-session-info", {"list_active": True})
            calls += 1
            if result.is_error:
                errors.append(result.content)
            await asyncio.sleep(0.1)

    def keys() -> list[str]:
        out = cp.kubectl(
            "-n", SYSTEM, "exec", "deployment/codex-redis", "--", "sh", "-c", "redis-cli --scan", check=False
        )
        return [k for k in out.stdout.split() if ":rate:" in k]

    async with install.client("alice") as alice:
        worker = asyncio.create_task(load(alice))
        await asyncio.sleep(2)
        assert await asyncio.to_thread(keys), "the gateway counts calls in Redis"
        old = install.pod_of("redis")["metadata"]["name"]
        cp.kubectl("-n", SYSTEM, "delete", "pod", old, "--wait=false")
        await asyncio.to_thread(_wait, lambda: install.replaced("redis", old), 60, "a new Redis pod")
        await asyncio.to_thread(install.rollout, "codex-redis")
        # A fresh Redis is empty; the gateway's next calls after its pause count there again.
        await asyncio.to_thread(_wait, lambda: bool(keys()), 90, "rate counters in the new Redis")
        stop.set()
        await worker
    assert calls > 20 and not errors, (calls, errors)


async def test_warm_runners_from_the_chart_hand_a_reply_to_the_live_pod(install: InClusterInstall) -> None:
    """The shipped chart has warm runners on. With a warm pool for the gateway's
    default level added (an upgrade): a `codex` call's first turn takes the
    pool pod; the operator, in its pod, reaches that pod's agent across both
    NetworkPolicies the chart and the operator make (its own egress, the
    pod's ingress by namespace and pod labels); and a `codex-reply` runs in
    the conversation's pod. Last in this module: it upgrades the release, and
    puts the install's own values back at the end."""
    import asyncio

    level = "read-only"  # the chart's config.codex.sandbox: what a bare `codex` call gets
    install.upgrade({"config": {"kubernetes": {"warm_runners": {"pool_sizes": {level: 1}}}}})
    try:

        def pool_ready() -> bool:
            found = json.loads(
                install.control_plane.kubectl(
                    "-n", SESSIONS, "get", "pods", "-l", f"{names.LABEL_POOL}={level}", "-o", "json"
                ).stdout
            )["items"]
            return any(p["status"].get("phase") == "Running" and p["status"].get("podIP") for p in found)

        await asyncio.to_thread(_wait, pool_ready, 180, "a ready warm pool pod", install)
        async with install.client("alice") as alice:
            first = _structured(await alice.call_tool("codex", {"prompt": "warm one"}))["session_id"]

            def succeeded(name: str) -> bool:
                return (_sessions(install).get(name, {}).get("status") or {}).get("phase") == "Succeeded"

            await asyncio.to_thread(_wait, lambda: succeeded(first), 120, "the first turn", install)
            reply = _structured(
                await alice.call_tool("codex-reply", {"prompt": "warm two", "session_id": first})
            )
            second = reply["session_id"]
            await asyncio.to_thread(_wait, lambda: succeeded(second), 120, "the reply", install)
        sessions = _sessions(install)
        pod = sessions[first]["status"]["podName"]
        assert pod.startswith("pool-"), sessions[first]["status"]  # the first turn took the pool pod
        assert sessions[second]["status"]["podName"] == pod, (
            sessions[first]["status"],
            sessions[second]["status"],
        )
        assert sessions[second]["status"]["workspaceClaim"] == sessions[first]["status"]["workspaceClaim"]
        owner = json.loads(
            install.control_plane.kubectl("-n", SESSIONS, "get", "pod", pod, "-o", "json").stdout
        )
        assert [o["name"] for o in owner["metadata"]["ownerReferences"]] == [second]
        policy = json.loads(
            install.control_plane.kubectl(
                "-n",
                SESSIONS,
                "get",
                "networkpolicy",
                names.network_policy(owner["metadata"]["labels"][names.LABEL_POLICY]),
                "-o",
                "json",
            ).stdout
        )
        (rule,) = policy["spec"]["ingress"]
        assert rule["from"] == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SYSTEM}},
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/component": "operator",
                        "app.kubernetes.io/part-of": "codex-k8s-operator",
                    }
                },
            }
        ]
        leader = install.operator_leader()
        assert leader and install.metric(leader, "codex_operator_runner_pods_handed_over_total") >= 1
        assert install.metric(leader, "codex_operator_warm_pool_claims_total", f'sandbox="{level}"') >= 1
    finally:
        install.upgrade()
