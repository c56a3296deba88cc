"""The warm pool: started, unclaimed runner pods per sandbox level, each with a
fresh workspace claim, that a conversation's first turn takes instead of
starting a pod (warm runners, `[kubernetes.warm_runners] pool_sizes`).

A slot is three objects made by the operator under a generated id
(`pool-<random>`), none of them a conversation's yet:

- the live pod (the agent, no credential, no prompt, no owner), made first;
- the NetworkPolicy of the level (the strict one from the start), owned by
  the pod;
- the workspace claim, its requester and conversation empty, owned by the
  pod; the pod cannot be scheduled before it exists, so the policy is in
  place before the pod runs. An unclaimed slot goes by deleting its pod.

A first turn claims a slot in two guarded writes (session_reconciler): the
pod's controller reference and labels (one patch guarded by the pod's
resourceVersion: two turns, or two operators, cannot both get it), then the
claim's requester and conversation (guarded by its resourceVersion, only
while unbound). From then on the pod is the conversation's live pod and the
claim its workspace (status.workspaceClaim). Slots are never reused; the pool
makes a new one for each claimed or retired pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from codex_api import binding, names
from codex_api.common import SandboxLevel
from codex_api.config import CodexMCPConfig
from codex_api.session import CodexSessionSpec, Workspace
from codex_runner.contract import turn_settings_for

from .conditions import now, parse_time
from .context import Context
from .kube import Conflict
from .model_access import runner_endpoint
from .netpol_builder import agent_ingress_rule, build_network_policy
from .ownership import check_child
from .pod_builder import LivePod, build_runner_pod, build_workspace_claim, pod_shape
from .pod_outcome import pod_outcome, unschedulable

log = logging.getLogger("codex_operator.warm_pool")

POOL_PERIOD_SECONDS = 5.0
SLOT_PREFIX = "pool-"
_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Slot:
    claim: dict[str, Any]
    policy: dict[str, Any]
    pod: dict[str, Any]


def new_slot_id() -> str:
    return SLOT_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def template_spec(level: SandboxLevel) -> CodexSessionSpec:
    """The first turn a pool pod is made for: the level, the configured defaults,
    a persistent workspace. The prompt is not in a live pod's spec."""
    return CodexSessionSpec(prompt="-", sandbox=level, workspace=Workspace(type="persistent"))


def build_slot(
    *, slot: str, level: SandboxLevel, namespace: str, config: CodexMCPConfig, live: LivePod
) -> Slot:
    """The claim, policy and pod of one slot. The pod is built exactly as a first
    turn's pod of this level would be (so a turn can compare shapes), then made
    no one's: no owner, no session or conversation label."""
    kube = config.kubernetes
    spec = template_spec(level)
    endpoint = runner_endpoint(config)
    settings = turn_settings_for(
        spec,
        model=config.codex.model,
        resume_thread_id=None,
        endpoint=endpoint,
        network_fence_seconds=kube.network_fence_seconds,
    )
    claim = build_workspace_claim(
        conversation=slot,
        namespace=namespace,
        owner_refs=[],
        size=kube.runner_resources.workspace_size,
        storage_class=kube.runner_resources.storage_class_name or None,
        requester="",
    )
    policy = build_network_policy(
        session_name=slot,
        namespace=namespace,
        session_uid="",
        conversation=slot,
        sandbox=level,
        endpoint=endpoint,
        ingress=[agent_ingress_rule(kube.warm_runners)],
    )
    pod = build_runner_pod(
        session_name=slot,
        session_uid="",
        namespace=namespace,
        spec=spec,
        settings=settings,
        conversation=slot,
        attempt=1,
        timeout_seconds=kube.warm_runners.max_pod_lifetime_seconds,  # a live pod's deadline is its lifetime
        config=config,
        credential="",  # through the model proxy: each turn's order brings its credential
        live=live,
    )
    claim["metadata"]["annotations"] = {names.ANNOTATION_REQUESTER: "", names.ANNOTATION_CONVERSATION: ""}
    for obj in (claim, policy, pod):
        meta = obj["metadata"]
        meta["ownerReferences"] = []
        labels = meta["labels"]
        labels.pop(names.LABEL_SESSION, None)
        labels.pop(names.LABEL_CONVERSATION, None)
        labels[names.LABEL_POOL] = level
    return Slot(claim=claim, policy=policy, pod=pod)


def is_unclaimed(pod: dict[str, Any]) -> bool:
    """A pool pod nobody has claimed (claiming removes the pool label)."""
    meta = pod["metadata"]
    return bool((meta.get("labels") or {}).get(names.LABEL_POOL)) and binding.controller_uid(pod) is None


def slot_of(pod: dict[str, Any]) -> str:
    """The slot id a pod was made under (its policy's name is built from it)."""
    return str((pod["metadata"].get("labels") or {}).get(names.LABEL_POLICY, ""))


def is_pool_born(pod: dict[str, Any]) -> bool:
    return slot_of(pod).startswith(SLOT_PREFIX)


def slot_claim(pod: dict[str, Any]) -> str:
    """The workspace claim a pool pod was made with (the store keeps no pod volumes)."""
    return names.workspace_claim(slot_of(pod))


def _owner(obj: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    # No blockOwnerDeletion: it would need the right to set finalizers on pods
    # and claims, and nothing waits for the owner's deletion here.
    meta = obj["metadata"]
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"]}


def _ready(pod: dict[str, Any]) -> bool:
    return pod_outcome(pod).state == "running" and bool((pod.get("status") or {}).get("podIP"))


async def claim_slot(
    ctx: Context, body: dict[str, Any], spec: CodexSessionSpec, manifest_for: Callable[[str], dict[str, Any]]
) -> dict[str, Any] | None:
    """A ready pool pod of the turn's level made this first turn's runner, or None
    (then it starts a pod of its own). `manifest_for(claim)`: the pod the turn
    would get with that workspace claim; a slot is taken only when that pod
    is exactly the slot's (same shape: level, model, image, resources, key)."""
    if ctx.turns is None:
        return None
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    candidates = sorted(
        (
            pod
            for pod in ctx.store.pods.values()
            if pod["metadata"]["namespace"] == namespace
            and is_unclaimed(pod)
            and pod["metadata"]["labels"].get(names.LABEL_POOL) == spec.sandbox
            and not pod["metadata"].get("deletionTimestamp")
            and _ready(pod)
            and (pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_AGENT_KEY)
            == ctx.turns.fingerprint
        ),
        key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")),
    )
    for pod in candidates:
        wanted = manifest_for(slot_claim(pod))
        if (pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_POD_SHAPE) != pod_shape(wanted):
            log.info(
                "pool pod %s/%s not claimed by %s: another shape", namespace, pod["metadata"]["name"], name
            )
            continue
        owner = names.owner_reference("CodexSession", name, uid)
        labels: dict[str, str | None] = {
            names.LABEL_SESSION: name,
            names.LABEL_CONVERSATION: wanted["metadata"]["labels"][names.LABEL_CONVERSATION],
            names.LABEL_POOL: None,
        }
        try:
            claimed = await ctx.api.hand_over_pod(namespace, pod, owner=owner, labels=labels)
        except Conflict as err:
            log.info("pool pod %s/%s not claimed by %s: %s", namespace, pod["metadata"]["name"], name, err)
            continue
        found = check_child(claimed, uid, lambda _uid: True)
        if found is not None:
            raise found
        ctx.store.upsert(ctx.store.pods, claimed)
        ctx.metrics.pool_claims.labels(spec.sandbox).inc()
        if ctx.pool is not None:
            ctx.pool.wake()
        log.info("pool pod %s/%s claimed by %s", namespace, pod["metadata"]["name"], name)
        return claimed
    return None


def claimed_slot(ctx: Context, namespace: str, uid: str) -> dict[str, Any] | None:
    """The pool pod this session has claimed already (an operator that stopped
    between claiming and writing the status leaves that to its successor)."""
    for pod in ctx.store.pods.values():
        meta = pod["metadata"]
        if (
            meta["namespace"] == namespace
            and binding.controller_uid(pod) == uid
            and is_pool_born(pod)
            and not meta.get("deletionTimestamp")
            and not pod_outcome(pod).finished
        ):
            return pod
    return None


class WarmPool:
    """Keeps `pool_sizes` ready pool pods per level in each sessions namespace:
    replaces claimed, ended, too old and outdated ones (another image, model,
    key or configuration: their shape is no longer the one a turn would get)."""

    def __init__(self, ctx: Context, namespaces: list[str]) -> None:
        assert ctx.turns is not None
        self.ctx = ctx
        self.turns = ctx.turns
        self.namespaces = namespaces
        self.config = ctx.config.kubernetes.warm_runners
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.fill()
            except Exception:  # the next pass tries again; one bad pass must not end the pool
                log.exception("warm pool pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POOL_PERIOD_SECONDS)
            self._wake.clear()

    async def fill(self) -> None:
        for namespace in self.namespaces:
            for level, size in self.config.pool_sizes.items():
                await self._fill_level(namespace, level, size)

    def _slot(self, slot: str, level: SandboxLevel, namespace: str) -> Slot:
        return build_slot(
            slot=slot, level=level, namespace=namespace, config=self.ctx.config, live=self.turns.live_pod()
        )

    def _stale(self, pod: dict[str, Any], level: SandboxLevel) -> str | None:
        meta = pod["metadata"]
        outcome = pod_outcome(pod)
        if outcome.finished or outcome.lost:
            return "it ended"
        created = parse_time(meta.get("creationTimestamp"))
        if created is not None and now() - created > timedelta(seconds=self.config.pool_max_age_seconds):
            return "it is older than pool_max_age_seconds"
        annotations = meta.get("annotations") or {}
        if annotations.get(names.ANNOTATION_AGENT_KEY) != self.turns.fingerprint:
            return "another operator key started it"
        fresh = self._slot(slot_of(pod), level, meta["namespace"]).pod
        if (
            annotations.get(names.ANNOTATION_POD_SHAPE)
            != fresh["metadata"]["annotations"][names.ANNOTATION_POD_SHAPE]
        ):
            return "the configuration changed since it was made"
        return None

    async def _fill_level(self, namespace: str, level: SandboxLevel, size: int) -> None:
        # A turn's pod waits for room on the nodes: the pool neither takes room
        # nor keeps a pod that waits for it too.
        starved = any(
            pod["metadata"]["namespace"] == namespace and unschedulable(pod) and not is_unclaimed(pod)
            for pod in self.ctx.store.pods.values()
        )
        waiting: list[dict[str, Any]] = []
        for pod in list(self.ctx.store.pods.values()):
            meta = pod["metadata"]
            if meta["namespace"] != namespace or not is_unclaimed(pod):
                continue
            if meta["labels"].get(names.LABEL_POOL) != level or meta.get("deletionTimestamp"):
                continue
            why = self._stale(pod, level) if size else "the pool of its level is off"
            if why is None and starved and unschedulable(pod):
                why = "a turn's pod waits for room on the nodes"
            if why is None and len(waiting) < size:
                waiting.append(pod)
                if not (pod.get("status") or {}).get("podIP"):
                    await self._complete(pod, level)  # idempotent; a pod that runs has both
                continue
            log.info("removing pool pod %s/%s: %s", namespace, meta["name"], why or "the pool is full")
            await self.ctx.api.delete_pod(namespace, meta["name"], grace_seconds=1)
        ready = sum(_ready(pod) for pod in waiting)
        self.ctx.metrics.pool_pods.labels(level, "ready").set(ready)
        self.ctx.metrics.pool_pods.labels(level, "starting").set(len(waiting) - ready)
        if starved:
            return
        for _ in range(size - len(waiting)):
            await self._create(namespace, level)

    async def _create(self, namespace: str, level: SandboxLevel) -> None:
        slot = self._slot(new_slot_id(), level, namespace)
        pod = await self.ctx.api.create_pod(namespace, slot.pod)
        if not is_unclaimed(pod) or slot_of(pod) != slot_of(slot.pod):
            log.warning("pool slot name %s is taken by another pod; skipped", pod["metadata"]["name"])
            return
        self.ctx.store.upsert(self.ctx.store.pods, pod)
        self.ctx.metrics.pool_pods_created.labels(level).inc()
        self.ctx.metrics.pods_started.inc()
        log.info("pool pod %s/%s created for %s", namespace, pod["metadata"]["name"], level)
        await self._complete(pod, level)

    async def _complete(self, pod: dict[str, Any], level: SandboxLevel) -> None:
        """The policy and the claim of a slot whose pod exists, both owned by the pod.

        The pod comes first, so nothing of a slot is ever without an owner (an
        operator that stops in between leaves a pod its successor completes
        here, or removes with everything it owns). It cannot start before its
        claim exists (the scheduler waits for it), and the claim is made after
        the policy: the pod's strict policy is in force before it runs."""
        meta = pod["metadata"]
        namespace = meta["namespace"]
        slot = self._slot(slot_of(pod), level, namespace)
        owned = {"ownerReferences": [_owner(pod, "Pod", "v1")]}
        api = self.ctx.api
        policy = await api.ensure_network_policy(
            namespace, {**slot.policy, "metadata": {**slot.policy["metadata"], **owned}}
        )
        claim = await api.ensure_claim(
            namespace, {**slot.claim, "metadata": {**slot.claim["metadata"], **owned}}
        )
        for obj in (policy, claim):
            if not any(ref.get("uid") == meta["uid"] for ref in obj["metadata"].get("ownerReferences") or []):
                log.warning(
                    "removing pool pod %s/%s: %s %s is not its own",
                    namespace,
                    meta["name"],
                    obj["kind"],
                    obj["metadata"]["name"],
                )
                await api.delete_pod(namespace, meta["name"], grace_seconds=1)
                return
