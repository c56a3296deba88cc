"""The identity webhook's HTTPS server, in every replica from the first moment.

It answers AdmissionReviews at the paths the shipped webhook configuration
names (``/stamp-decider``, ``/stamp-requester``) with a JSONPatch of the
changes ``webhook.decider_changes`` / ``webhook.requester_changes`` compute.
It does not depend on kopf or on leading: stamping needs only the request,
so every replica serves it, followers too, and a leader failover never
leaves the webhook without a server (kopf's own webhook server runs inside
kopf, which runs on the leader only).

The serving certificate is re-read when its files change (rotation by
cert-manager or a Secret update) on the next TLS handshake.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from . import webhook

log = logging.getLogger("codex_operator.admission_server")

MAX_REVIEW_BYTES = 3 * 1024 * 1024  # the API server's own request limit is 3 MiB


def json_patch(changes: Mapping[str, Any], spec_present: bool) -> list[dict[str, Any]]:
    """RFC 6902 operations setting ``spec.<key>`` for each change (``add`` replaces)."""
    ops: list[dict[str, Any]] = []
    if changes and not spec_present:
        ops.append({"op": "add", "path": "/spec", "value": {}})
    for key, value in changes.items():
        ops.append(
            {"op": "add", "path": "/spec/" + key.replace("~", "~0").replace("/", "~1"), "value": value}
        )
    return ops


def review_response(
    review: Mapping[str, Any], changes_for: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> dict[str, Any]:
    """The AdmissionReview answer: always allowed (the policies decide), with the stamps as a patch."""
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise ValueError("not an AdmissionReview request")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    changes = changes_for(request)
    if changes:
        obj: Mapping[str, Any] = _mapping(request.get("object")) or {}
        ops = json_patch(changes, isinstance(obj.get("spec"), Mapping))
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        meta = obj.get("metadata") or {}
        log.info(
            "stamped %s",
            ", ".join(f"spec.{k}={v}" for k, v in changes.items()),
            extra={
                "namespace": meta.get("namespace"),
                "object": meta.get("name") or meta.get("generateName"),
            },
        )
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


class AdmissionServer:
    def __init__(self, options: webhook.WebhookOptions) -> None:
        self.options = options
        self._runner: web.AppRunner | None = None
        self._context: ssl.SSLContext | None = None
        self._stamp: tuple[float, float] = (0.0, 0.0)

    def _decider(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        return webhook.decider_changes(
            request.get("operation"),
            _mapping(request.get("oldObject")),
            _mapping(request.get("object")),
            _mapping(request.get("userInfo")),
            self.options.trusted_requesters,
        )

    def _requester(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        return webhook.requester_changes(
            request.get("operation"),
            _mapping(request.get("object")),
            _mapping(request.get("userInfo")),
            self.options.trusted_requesters,
        )

    def _current_context(self) -> ssl.SSLContext:
        cert, key = self.options.cert, self.options.key
        assert cert is not None and key is not None
        stamp = (os.stat(cert).st_mtime, os.stat(key).st_mtime)
        if self._context is None or stamp != self._stamp:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(cert), str(key))
            self._context, self._stamp = context, stamp
        return self._context

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        try:
            sslobj.context = self._current_context()
        except (OSError, ssl.SSLError) as err:  # keep serving with the last good certificate
            log.warning("cannot reload the webhook certificate: %s", err)

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.router.add_post(webhook.path(webhook.DECIDER_HANDLER), self._handler(self._decider))
        app.router.add_post(webhook.path(webhook.REQUESTER_HANDLER), self._handler(self._requester))
        context = self._current_context()
        context.sni_callback = self._sni
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.options.host, self.options.port, ssl_context=context).start()
        log.info("webhook serving", extra={"port": self.options.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _handler(
        self, changes_for: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    ) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            try:
                review = await request.json()
                if not isinstance(review, Mapping):
                    raise ValueError("the body is not a JSON object")
                return web.json_response(review_response(review, changes_for))
            except (ValueError, UnicodeDecodeError) as err:
                return web.json_response({"error": f"bad AdmissionReview: {err}"}, status=400)

        return handle
