"""The warm pool on the real node (issue 14): a conversation's first turn takes
a started, unclaimed runner pod of its level, with the fresh workspace claim
it was made with, instead of starting a pod; the pool makes a new one.

Everything is real but the model: the operator with
`[kubernetes.warm_runners] pool_sizes` set, the runner image on the kubelet,
the model proxy holding the only key, NetworkPolicy enforcement, Redis."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_api.config import parse_quantity
from codex_devenv import fake_model as fm
from codex_devenv.admission_kit import ScopedAdmission
from codex_devenv.live_system import AGENT_PORT, finished, kill_until_done, pods, turns_seen
from codex_devenv.process import wait_for
from codex_devenv.testkit import apply_session

LEVEL = "isolated"


@pytest.fixture
def system(live: Any) -> Iterator[dict[str, Any]]:
    warm = {
        "idle_seconds": "60",
        "max_idle_pods": "6",
        "max_pod_lifetime_seconds": "900",
        "pool_max_age_seconds": "300",
        "pool_sizes": f'{{ "{LEVEL}" = 1 }}',
    }
    with live(warm=warm) as parts:
        yield parts


def ready_pool_pods(kube_client: Any, ns: str) -> list[Any]:
    return [
        p
        for p in pods(kube_client, ns).values()
        if (p.metadata.labels or {}).get(names.LABEL_POOL) == LEVEL
        and not p.metadata.deletion_timestamp
        and p.status.phase == "Running"
        and p.status.pod_ip
    ]


def a_ready_pool_pod(kube_client: Any, ns: str, other_than: frozenset[str] | set[str] = frozenset()) -> Any:
    found: list[Any] = []

    def ready() -> bool:
        found[:] = [p for p in ready_pool_pods(kube_client, ns) if p.metadata.name not in other_than]
        return bool(found)

    wait_for(ready, timeout=120, what="a ready warm pool pod")
    return found[0]


def claim_of(pod: Any) -> str:
    return next(v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim)


def test_a_first_turn_takes_a_ready_pool_pod_and_the_pool_makes_another(
    system: dict[str, Any], kube_client: Any, volumes: Path
) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    core, net = client.CoreV1Api(kube_client), client.NetworkingV1Api(kube_client)
    slot = a_ready_pool_pod(kube_client, ns)
    slot_id = slot.metadata.labels[names.LABEL_POLICY]
    claim_name = claim_of(slot)

    # Before: no one's. No owner, no session, no credential, an unbound claim,
    # the level's strict policy owned by the pod.
    assert not slot.metadata.owner_references
    assert names.LABEL_SESSION not in slot.metadata.labels
    assert names.LABEL_CONVERSATION not in slot.metadata.labels
    spec_text = json.dumps(slot.to_dict(), default=str)
    assert system["api_key"] not in spec_text and "secretKeyRef" not in spec_text and "cxs1." not in spec_text
    claim = core.read_namespaced_persistent_volume_claim(claim_name, ns)
    assert claim.metadata.annotations[names.ANNOTATION_REQUESTER] == ""
    assert claim.metadata.annotations[names.ANNOTATION_CONVERSATION] == ""
    assert [(o.kind, o.name) for o in claim.metadata.owner_references] == [("Pod", slot.metadata.name)]
    policy = net.read_namespaced_network_policy(names.network_policy(slot_id), ns)
    assert [(o.kind, o.name) for o in policy.metadata.owner_references] == [("Pod", slot.metadata.name)]
    assert policy.spec.pod_selector.match_labels == {names.LABEL_POLICY: slot_id}
    assert [p.port for rule in policy.spec.ingress for p in rule.ports] == [AGENT_PORT]
    peers = [peer.ip_block.cidr for rule in policy.spec.egress for peer in rule.to or [] if peer.ip_block]
    assert "0.0.0.0/0" not in peers  # isolated: no public egress

    model.set_script(
        fm.apply_patch("*** Begin Patch\n*** Add File: notes.txt\n+remember 7\n*** End Patch\n"),
        fm.say("Wrote notes.txt"),
    )
    started = time.monotonic()
    apply_session(cp, ns, "pool1", sandbox=LEVEL, workspace={"type": "persistent"}, prompt="write notes")
    first = finished(kube_client, ns, "pool1")
    took = time.monotonic() - started
    status = first["status"]
    assert status["phase"] == "Succeeded", status
    print(f"\n[pool] first turn on a pool pod: {took * 1000:.0f} ms from apply to Succeeded")
    assert status["podName"] == slot.metadata.name
    assert status["workspaceClaim"] == claim_name
    assert status["conversationId"] == "pool1"
    assert (volumes / ns / claim_name / "workspace" / "notes.txt").read_text() == "remember 7\n"
    assert [p for p in pods(kube_client, ns) if p.startswith("pool1-")] == []  # no pod of its own

    # After: the pod, the claim are the conversation's.
    pod = pods(kube_client, ns)[slot.metadata.name]
    assert [(o.name, o.controller) for o in pod.metadata.owner_references] == [("pool1", True)]
    assert pod.metadata.labels[names.LABEL_SESSION] == "pool1"
    assert pod.metadata.labels[names.LABEL_CONVERSATION] == "pool1"
    assert names.LABEL_POOL not in pod.metadata.labels
    claim = core.read_namespaced_persistent_volume_claim(claim_name, ns)
    requester = first["spec"].get("requestedBy") or "unknown"
    assert claim.metadata.annotations[names.ANNOTATION_REQUESTER] == requester
    assert claim.metadata.annotations[names.ANNOTATION_CONVERSATION] == "pool1"
    assert {o.name for o in claim.metadata.owner_references} == {slot.metadata.name, "pool1"}
    assert {r.authorization for r in model.responses_requests} == {"Bearer " + system["api_key"]}

    # The pool makes a new pod; the claimed one is never one of its own again.
    refill_started = time.monotonic()
    fresh = a_ready_pool_pod(kube_client, ns, other_than={slot.metadata.name})
    print(f"[pool] a new pool pod ready {time.monotonic() - refill_started:.1f} s after the claim was seen")
    assert claim_of(fresh) != claim_name

    # The reply goes to the same pod and sees the conversation's workspace.
    model.set_script(
        fm.exec_command("cat notes.txt"), fm.computed(lambda r: f"It says: {r.last_tool_output()}")
    )
    apply_session(
        cp, ns, "pool2", sandbox=LEVEL, workspace={"type": "persistent"}, resumeFrom="pool1", prompt="read it"
    )
    second = finished(kube_client, ns, "pool2")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert second["status"]["podName"] == slot.metadata.name
    assert second["status"]["workspaceClaim"] == claim_name
    assert second["status"]["threadId"] == status["threadId"]
    assert "remember 7" in second["status"]["response"]


def test_two_first_turns_at_once_never_share_a_pool_pod(system: dict[str, Any], kube_client: Any) -> None:
    cp, ns, model = system["cp"], system["ns"], system["model"]
    core = client.CoreV1Api(kube_client)
    slot = a_ready_pool_pod(kube_client, ns)
    model.set_script(then=fm.say("mine"))
    for name in ("twin-a", "twin-b"):
        apply_session(cp, ns, name, sandbox=LEVEL, workspace={"type": "persistent"}, prompt=f"<{name}>")
    done = {name: finished(kube_client, ns, name)["status"] for name in ("twin-a", "twin-b")}
    assert {n: s["phase"] for n, s in done.items()} == {"twin-a": "Succeeded", "twin-b": "Succeeded"}, done
    assert done["twin-a"]["podName"] != done["twin-b"]["podName"]
    assert [s["podName"] for s in done.values()].count(
        slot.metadata.name
    ) == 1  # one got it, the other started cold
    for name, s in done.items():
        claim = core.read_namespaced_persistent_volume_claim(s["workspaceClaim"], ns)
        assert claim.metadata.annotations[names.ANNOTATION_CONVERSATION] == name
    assert done["twin-a"]["workspaceClaim"] != done["twin-b"]["workspaceClaim"]


def test_a_session_named_after_a_pool_slot_gets_nothing_of_it(
    system: dict[str, Any], kube_client: Any, client_for: Any
) -> None:
    """mallory, as herself through the shipped admission policies, names a
    read-only first turn after the ready isolated slot, so that her turn's
    claim, policy and pod names are the slot's: refused, the slot stays
    unclaimed and unbound, nothing reached the model."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    slot = a_ready_pool_pod(kube_client, ns)
    slot_id = slot.metadata.labels[names.LABEL_POLICY]
    admission = ScopedAdmission(cp, ns).install(client_for)
    try:
        doc = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CodexSession",
            "metadata": {"name": slot_id},
            "spec": {
                "requestedBy": "mallory",
                "sandbox": "read-only",
                "workspace": {"type": "persistent"},
                "prompt": "whatever is in there",
            },
        }
        model.set_script(fm.say("mallory got in"))
        cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(doc), user="mallory")
        s = finished(kube_client, ns, slot_id)
    finally:
        admission.uninstall()
    assert s["status"]["phase"] == "Failed" and s["status"]["reason"] == "WorkspaceForbidden", s["status"]
    pod = pods(kube_client, ns)[slot.metadata.name]
    assert not pod.metadata.owner_references and pod.metadata.labels.get(names.LABEL_POOL) == LEVEL
    claim = client.CoreV1Api(kube_client).read_namespaced_persistent_volume_claim(claim_of(slot), ns)
    assert claim.metadata.annotations[names.ANNOTATION_REQUESTER] == ""
    assert [(o.kind, o.name) for o in claim.metadata.owner_references] == [("Pod", slot.metadata.name)]
    assert model.responses_requests == []


def test_the_operator_killed_at_random_points_gives_no_pool_pod_to_two_conversations(
    system: dict[str, Any], kube_client: Any
) -> None:
    """Four conversations of two turns each start while the pool holds a pod and
    the operator is SIGKILLed and restarted at random moments (mid-claim,
    mid-bind, mid-refill): every turn Succeeded and reached the model once, no
    pod and no claim served two conversations, and the pool is full again."""
    cp, ns, model = system["cp"], system["ns"], system["model"]
    core = client.CoreV1Api(kube_client)
    a_ready_pool_pod(kube_client, ns)
    model.set_script(then=fm.say("ok", delay=0.3))
    chains = [[f"pc{c}-{i}" for i in range(2)] for c in range(4)]
    for i in range(2):
        for chain in chains:
            extra = {"resumeFrom": chain[i - 1]} if i else {}
            apply_session(
                cp,
                ns,
                chain[i],
                sandbox=LEVEL,
                workspace={"type": "persistent"},
                prompt=f"<{chain[i]}> go",
                **extra,
            )
    every = [name for chain in chains for name in chain]
    sessions, kills = kill_until_done(system, kube_client, every, kills=5, seed=1414)
    ran = turns_seen(model, r"pc\d-\d")
    assert ran == Counter(dict.fromkeys(every, 1)), ran
    by_pod: dict[str, set[str]] = {}
    by_claim: dict[str, set[str]] = {}
    for s in sessions.values():
        by_pod.setdefault(s["status"]["podName"], set()).add(s["status"]["conversationId"])
        by_claim.setdefault(s["status"]["workspaceClaim"], set()).add(s["status"]["conversationId"])
    assert all(len(c) == 1 for c in by_pod.values()), by_pod
    assert all(len(c) == 1 for c in by_claim.values()), by_claim
    for claim_name, (conversation,) in by_claim.items():
        claim = core.read_namespaced_persistent_volume_claim(claim_name, ns)
        assert claim.metadata.annotations[names.ANNOTATION_CONVERSATION] == conversation
    pooled = [p for p in by_pod if p.startswith("pool-")]
    assert pooled, "no conversation began in a pool pod"
    wait_for(
        lambda: (
            len(ready_pool_pods(kube_client, ns)) == 1
            and ready_pool_pods(kube_client, ns)[0].metadata.name not in by_pod
        ),
        timeout=120,
        what="the pool to hold one new pod again",
    )
    print(
        f"\n[pool] {kills} operator kills; {len(pooled)} of {len(chains)} conversations began in a pool pod"
    )


@pytest.fixture
def crowded(live: Any, node_cluster: Any, kube_client: Any) -> Iterator[dict[str, Any]]:
    """Warm runners, no pool, on a node with room for one runner pod: each asks
    for 60% of the CPU the node has left."""
    node = node_cluster[1]
    core = client.CoreV1Api(kube_client)
    allocatable = parse_quantity(core.read_node(node.name).status.allocatable["cpu"])
    on_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node.name}").items
    used = sum(
        parse_quantity((c.resources.requests or {}).get("cpu", "0"))
        for p in on_node
        if p.status.phase not in ("Succeeded", "Failed")
        for c in p.spec.containers
        if c.resources
    )
    request = int((allocatable - used) * 600)  # millicores
    tables = (
        f'\n[kubernetes.runner_resources]\ncpu_request = "{request}m"\ncpu_limit = "{max(request, 2000)}m"\n'
    )
    warm = {"idle_seconds": "300", "max_idle_pods": "4"}
    with live(warm=warm, tables=tables) as parts:
        yield parts


def test_an_idle_pod_makes_room_for_a_turn_that_finds_none(crowded: dict[str, Any], kube_client: Any) -> None:
    """An idle live pod keeps its CPU request. When a new turn's pod finds no node
    with room, the operator ends the longest-idle live pod instead of letting
    the turn wait out the idle timeout (300 s here)."""
    cp, ns, model = crowded["cp"], crowded["ns"], crowded["model"]
    model.set_script(then=fm.say("ok"))
    apply_session(cp, ns, "room1", sandbox=LEVEL, workspace={"type": "persistent"}, prompt="one")
    first = finished(kube_client, ns, "room1")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    idle_pod = first["status"]["podName"]
    assert pods(kube_client, ns)[idle_pod].status.phase == "Running"  # idle, holding its request
    apply_session(cp, ns, "room2", sandbox=LEVEL, workspace={"type": "persistent"}, prompt="two")
    second = finished(kube_client, ns, "room2", timeout=90)
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert second["status"]["podName"] != idle_pod
    wait_for(lambda: idle_pod not in pods(kube_client, ns), timeout=30, what="the idle pod to go")
    events = client.CoreV1Api(kube_client).list_namespaced_event(ns).items
    assert any(
        e.involved_object.name == second["status"]["podName"] and e.reason == "FailedScheduling"
        for e in events
    ), "the second pod never waited for room: the test did not crowd the node"
