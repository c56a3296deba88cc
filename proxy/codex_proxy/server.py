"""The model proxy's HTTP server.

    POST /v1/<provider>/responses   a runner's model request (Codex's base_url
                                    is http://<proxy>/v1/<provider>)
    GET  /v1/usage                  the credential's session's metered usage
                                    (codex_api.metered; the operator reads it
                                    when the turn has ended)
    GET  /healthz                   alive
    GET  /metrics                   Prometheus

A request carries `Authorization: Bearer <session credential>`. In order,
each refusal a clear OpenAI-style error Codex shows as the turn's failure:
unknown provider 404, missing or forged credential 401, session ended or
not the session's pod or a provider the session may not use 403, budget
spent 402 (`budget_exceeded`: the user's month or the session's cap), body
too large 413. Then the provider's key replaces the credential, the body goes
upstream unchanged, and the answer comes back byte for byte as it arrives (no
buffering) while the usage in its final event is read on the way
(codex_proxy.usage_stream) and metered (codex_proxy.meter). The chunk that
ends the final event is held until the usage is in Redis: a runner that has
seen `response.completed` may exit at once, and the operator then reads the
session's usage, which must already be complete. An upstream error answer is
passed on with the provider key blanked out of it.

`GET /v1/usage` takes the same credential and checks only its MAC: the
operator asks after the session has ended and from outside its pod, and all
it tells is the usage of the session the credential names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from codex_api.config import CodexMCPConfig
from codex_api.model_credential import InvalidCredential, SessionRef, verify
from codex_api.redaction import redact
from codex_api.result import BUDGET_EXCEEDED
from codex_gateway.guard import BudgetExceeded, RedisUnavailable

from .meter import Meter
from .sessions import LiveSession, Refused, SessionChecker
from .usage_stream import Reported, UsageScanner, from_response

log = logging.getLogger("codex_proxy.server")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
NOT_UPSTREAM = HOP_BY_HOP | {"authorization", "accept-encoding", "cookie", "x-forwarded-for", "forwarded"}
NOT_DOWNSTREAM = HOP_BY_HOP | {"content-encoding", "set-cookie", "openai-organization", "openai-project"}
# An error answer is read whole (to blank the key out) up to this size.
MAX_ERROR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Upstream:
    provider: str
    url: str  # <base_url>/responses
    key: str | None  # None: the variable is unset; the provider answers 503
    model: str  # for pricing when the provider's answer names none


def upstreams_from(config: CodexMCPConfig, environ: dict[str, str]) -> dict[str, Upstream]:
    endpoints: list[tuple[str, str, str, str]] = [
        (
            config.kubernetes.model_endpoint.provider_id,
            config.kubernetes.model_endpoint.base_url,
            config.kubernetes.model_endpoint.api_key_env,
            config.codex.model,
        )
    ]
    endpoints += [
        (p.provider_id, p.base_url, p.api_key_env, p.model) for p in config.kubernetes.wall_bounce_providers
    ]
    return {
        provider: Upstream(provider, base.rstrip("/") + "/responses", environ.get(env) or None, model)
        for provider, base, env, model in endpoints
    }


def error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"type": code, "code": code, "message": message, "param": None}}
    return web.json_response(body, status=status)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "codex_proxy_requests",
            "Model requests by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "codex_proxy_tokens",
            "Tokens metered, by provider and kind.",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.usd = Counter(
            "codex_proxy_cost_usd", "USD metered, by provider.", ["provider"], registry=self.registry
        )
        self.added = Histogram(
            "codex_proxy_overhead_seconds",
            "Time from a request's arrival to its forwarding upstream (the proxy's own checks).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )


class ModelProxy:
    def __init__(
        self,
        config: CodexMCPConfig,
        signing_key: bytes,
        checker: SessionChecker,
        meter: Meter,
        upstreams: dict[str, Upstream],
    ) -> None:
        self.config = config
        self._key = signing_key
        self.checker = checker
        self.meter = meter
        self.upstreams = upstreams
        self.metrics = ProxyMetrics()
        self._secrets = [u.key for u in upstreams.values() if u.key]
        self._http: aiohttp.ClientSession | None = None

    def app(self, *, with_metrics: bool = True) -> web.Application:
        """The proxy's routes. `with_metrics=False`: /metrics is served by
        `metrics_app()` on a port of its own, so that runner pods, which must
        reach this port, do not read every provider's traffic figures."""
        app = web.Application(client_max_size=self.config.model_proxy.max_request_bytes)
        app.router.add_post("/v1/{provider}/responses", self.responses)
        app.router.add_get("/v1/usage", self.usage)
        app.router.add_get("/healthz", self.healthz)
        if with_metrics:
            app.router.add_get("/metrics", self.prometheus)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    def metrics_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def _start(self, _app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.model_proxy.upstream_timeout_seconds, connect=30)
        # No pool limit: each runner's request is its own stream.
        self._http = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def _stop(self, _app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def _blank(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    def _credential(self, request: web.Request) -> SessionRef | str:
        """The session the request's credential names, or why there is none."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return "a session credential is required"
        try:
            return verify(self._key, credential.strip())
        except InvalidCredential as err:
            return str(err)

    async def usage(self, request: web.Request) -> web.Response:
        ref = self._credential(request)
        if isinstance(ref, str):
            return error(401, "invalid_credential", ref)
        try:
            metered = await self.meter.read(ref)
        except RedisUnavailable:
            return error(503, "usage_unavailable", "the metered usage cannot be read now (Redis unavailable)")
        return web.json_response(metered.to_k8s())

    async def responses(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        provider = request.match_info["provider"]
        upstream = self.upstreams.get(provider)
        if upstream is None:
            return self._refuse(provider, 404, "unknown_provider", f"no provider {provider[:64]!r} here")
        ref = self._credential(request)
        if isinstance(ref, str):
            return self._refuse(provider, 401, "invalid_credential", ref)
        try:
            session = await self.checker.check(ref, request.remote, provider)
        except Refused as err:
            log.warning("refused session %s/%s from %s: %s", ref.namespace, ref.name, request.remote, err)
            return self._refuse(provider, 403, "session_refused", str(err))
        try:
            await self.meter.check_budget(session)
        except BudgetExceeded as err:
            return self._refuse(provider, 402, "budget_exceeded", f"{BUDGET_EXCEEDED}: {err}")
        if upstream.key is None:
            return self._refuse(provider, 503, "provider_unconfigured", f"no key configured for {provider!r}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self.config.model_proxy.max_request_bytes
            return self._refuse(provider, 413, "request_too_large", f"request body over {limit} bytes")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_UPSTREAM}
        headers["Authorization"] = f"Bearer {upstream.key}"
        headers["Accept-Encoding"] = "identity"
        assert self._http is not None
        self.metrics.added.observe(time.monotonic() - arrived)
        try:
            async with self._http.post(upstream.url, data=body, headers=headers) as answer:
                if answer.status >= 400:
                    return await self._pass_error(provider, answer)
                return await self._stream(request, session, upstream, answer)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("upstream %s failed: %s", provider, self._blank(f"{type(err).__name__}: {err}"))
            return self._refuse(
                provider, 502, "upstream_unreachable", f"the provider {provider!r} did not answer"
            )

    def _refuse(self, provider: str, status: int, code: str, message: str) -> web.Response:
        self.metrics.requests.labels(provider[:64], code).inc()
        return error(status, code, message)

    async def _pass_error(self, provider: str, answer: aiohttp.ClientResponse) -> web.Response:
        raw = await answer.content.read(MAX_ERROR_BYTES)
        self.metrics.requests.labels(provider, f"upstream_{answer.status}").inc()
        text = self._blank(raw.decode("utf-8", "replace"))
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in NOT_DOWNSTREAM}
        return web.Response(status=answer.status, body=text.encode(), headers=headers)

    async def _meter(self, session: LiveSession, upstream: Upstream, reported: Reported) -> None:
        model = reported.model or upstream.model
        cost = await self.meter.record(session, upstream.provider, model, reported.usage)
        for kind, count in reported.usage.by_kind().items():
            self.metrics.tokens.labels(upstream.provider, kind).inc(count)
        self.metrics.usd.labels(upstream.provider).inc(cost)
        self.metrics.requests.labels(upstream.provider, "metered").inc()

    async def _stream(
        self, request: web.Request, session: LiveSession, upstream: Upstream, answer: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=answer.status)
        for k, v in answer.headers.items():
            if k.lower() not in NOT_DOWNSTREAM:
                out.headers.add(k, v)
        await out.prepare(request)
        sse = answer.headers.get("Content-Type", "").startswith("text/event-stream")
        scanner = UsageScanner()
        whole = bytearray()
        metered = False
        try:
            async for chunk in answer.content.iter_any():
                if sse:
                    scanner.feed(chunk)
                    if scanner.reported is not None and not metered:
                        # This chunk ends the final event: a client parses an SSE event at
                        # its blank line, so until this chunk is sent nobody has seen the
                        # answer end. Metered first, the usage is in Redis before the
                        # runner can finish, and before its next request's budget check.
                        await self._meter(session, upstream, scanner.reported)
                        metered = True
                elif len(whole) < self.config.model_proxy.max_request_bytes:
                    whole += chunk
                await out.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            self.metrics.requests.labels(upstream.provider, "client_gone").inc()
            if not metered:
                log.warning(
                    "session %s/%s left mid-answer: usage not metered",
                    session.ref.namespace,
                    session.ref.name,
                )
            raise
        reported: Reported | None = None
        if sse and not metered:
            scanner.close()  # a final event without its closing blank line
            reported = scanner.reported
        elif not sse:
            try:
                message = json.loads(whole)
                reported = from_response(message, "response") if isinstance(message, dict) else None
            except ValueError:
                reported = None
        if reported is not None:
            # Before the end of the body: a whole-JSON answer is complete only then.
            await self._meter(session, upstream, reported)
            metered = True
        if not metered:
            self.metrics.requests.labels(upstream.provider, "unmetered").inc()
            log.warning("answer for %s/%s carried no usage", session.ref.namespace, session.ref.name)
        await out.write_eof()
        return out
