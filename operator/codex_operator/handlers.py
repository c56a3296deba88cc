"""kopf handlers: thin. They configure kopf, start the runtime, and pass
watch events on; every decision is made in the reconcilers. The mutating
webhook handlers stamp identity; what to stamp is decided in
``admission``/``webhook``."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from codex_api import names
from codex_api.common import GROUP, VERSION

from . import webhook
from .runtime import Runtime


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own readers, no client library involved: in-cluster first, then $KUBECONFIG.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # Events are ours, on transitions only
    settings.scanning.disabled = True  # fixed namespaces; no cluster-wide CRD listing needed
    # Memory (docs/benchmarks.md, P5): list in chunks instead of one response
    # holding every session, and let a per-object worker go after half a second
    # instead of five (our handlers only enqueue). Both bound the transient
    # peak at startup and in bursts, which CPython keeps as resident memory.
    settings.watching.chunk_size = 500
    settings.queueing.idle_timeout = 0.5
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    webhook.configure(settings)
    runtime: Runtime = memo["runtime"]
    await runtime.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["runtime"].stop()


@kopf.on.event(GROUP, VERSION, "codexsessions")
async def session_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo["runtime"].session_event(event["type"], event["object"])


@kopf.on.event(GROUP, VERSION, "approvalrequests")
async def approval_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo["runtime"].approval_event(event["type"], event["object"])


@kopf.on.event("", "v1", "pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def pod_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo["runtime"].pod_event(event["type"], event["object"])
