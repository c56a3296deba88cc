"""Usage and spend, counted at the proxy from what the provider reported.

Keys (``P`` is ``[redis].key_prefix``, names percent-encoded as the gateway's
guard does; hashes of input, cached_input, output, reasoning, requests and
usd)::

    P:usage:s:<namespace>/<session>/<uid>  one session object; also per provider:
                                           <provider>:<kind>, <provider>:requests,
                                           <provider>:usd, <provider>:model
    P:usage:u:<user>:<YYYY-MM>             one user, one month (UTC)
    P:usage:p:<provider>:<YYYY-MM>         one provider, one month
    P:spend:<user>:<YYYY-MM>               the monthly budget's figure (the gateway reads it)
    P:charged:<session>                    set: the gateway does not add this session again

The session's key carries its UID, like its credential: a session deleted
and created again under the same name starts at zero, instead of inheriting
the old one's spend (and its cap). Provider ids cannot contain ':', so the
per-provider fields cannot collide with the totals.

All in one transaction per model request. Before a request the user's
monthly budget is checked (codex_gateway.guard: the same rule, the same
fail-open / fail-closed choice with Redis down), then the session's own cap
(``spec.maxCostUsd``), so a turn already running stops at its next model
request once either is spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from codex_api.config import CodexMCPConfig
from codex_api.metered import MeteredUsage, ProviderUsage
from codex_api.model_credential import SessionRef
from codex_api.pricing import round_usd, usd
from codex_api.session import Usage
from codex_gateway.guard import (
    SPEND_TTL_SECONDS,
    BudgetExceeded,
    Guard,
    RedisUnavailable,
    charged_key,
    month_key,
    spend_key,
)

from .sessions import LiveSession

log = logging.getLogger("codex_proxy.meter")

KINDS = ("input", "cached_input", "output", "reasoning")


def cap_refusal(cap: float, spent: float) -> str | None:
    """Why a session with ``cap`` USD that has spent ``spent`` may not send another request; None: it may."""
    if spent < cap:
        return None
    return f"session cost cap of ${cap:.6g} spent ({spent:.6g} USD metered for this session)"


def metered_from_hash(ref: SessionRef, raw: Mapping[Any, Any]) -> MeteredUsage:
    """A session's hash as the usage endpoint answers it (an empty hash: zeros)."""
    fields = {_text(k): _text(v) for k, v in raw.items()}

    def count(field: str) -> int:
        try:
            return max(int(float(fields.get(field, 0))), 0)
        except ValueError:
            return 0

    def amount(field: str) -> float:
        try:
            return max(round_usd(float(fields.get(field, 0))), 0.0)
        except ValueError:
            return 0.0

    providers = sorted({k.split(":", 1)[0] for k in fields if ":" in k})
    return MeteredUsage(
        namespace=ref.namespace,
        name=ref.name,
        uid=ref.uid,
        usage=Usage.from_kinds({kind: count(kind) for kind in KINDS}),
        requests=count("requests"),
        usd=amount("usd"),
        providers=[
            ProviderUsage(
                provider=p,
                model=fields.get(f"{p}:model") or None,
                usage=Usage.from_kinds({kind: count(f"{p}:{kind}") for kind in KINDS}),
                requests=count(f"{p}:requests"),
                usd=amount(f"{p}:usd"),
            )
            for p in providers
        ],
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Meter:
    def __init__(
        self, guard: Guard, config: CodexMCPConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.guard = guard
        self._config = config
        self._prefix = config.redis.key_prefix
        self._clock = clock

    def session_key(self, ref: SessionRef) -> str:
        return self.guard.key("usage:s", f"{ref.namespace}/{ref.name}/{ref.uid}")

    async def check_budget(self, session: LiveSession) -> None:
        """Raises codex_gateway.guard.BudgetExceeded: the user's month, then the session's cap."""
        await self.guard.check_budget(session.user)
        if session.max_cost_usd is not None:
            await self._check_cap(session, session.max_cost_usd)

    async def _check_cap(self, session: LiveSession, cap: float) -> None:
        if not self.guard.configured:
            return  # nothing is metered without Redis: the same as the monthly budget
        key = self.session_key(session.ref)
        try:
            raw = await self.guard.call("read session spend", lambda r: r.hget(key, "usd"))
        except RedisUnavailable:
            if self._config.limits.budget_fail_closed:
                raise BudgetExceeded("session cost cap cannot be checked: Redis unavailable") from None
            return
        refusal = cap_refusal(cap, float(raw or 0))
        if refusal is not None:
            raise BudgetExceeded(refusal)

    async def read(self, ref: SessionRef) -> MeteredUsage:
        """The session's metered usage; RedisUnavailable when it cannot be read (or there is no Redis)."""
        key = self.session_key(ref)
        raw = await self.guard.call("read session usage", lambda r: r.hgetall(key))
        return metered_from_hash(ref, raw or {})

    async def record(self, session: LiveSession, provider: str, model: str, usage: Usage) -> float:
        """Count one model request; returns its USD. Redis down: logged, not counted."""
        cost = usd(usage, model, self._config.cost)
        month = month_key(self._clock())
        ref = session.ref
        own = self.session_key(ref)
        keys = [
            own,
            self.guard.key("usage:u", session.user) + f":{month}",
            self.guard.key("usage:p", provider) + f":{month}",
        ]
        counts = {**usage.by_kind(), "requests": 1}

        async def write(r: Any) -> Any:
            pipe = r.pipeline(transaction=True)
            for key in keys:
                for field, value in counts.items():
                    if value:
                        pipe.hincrby(key, field, value)
                if cost:
                    pipe.hincrbyfloat(key, "usd", cost)
                pipe.expire(key, SPEND_TTL_SECONDS)
            for field, value in counts.items():
                if value:
                    pipe.hincrby(own, f"{provider}:{field}", value)
            if cost:
                pipe.hincrbyfloat(own, f"{provider}:usd", cost)
            pipe.hset(own, f"{provider}:model", model)
            if cost and session.user:
                spend = spend_key(self._prefix, session.user, month)
                pipe.incrbyfloat(spend, cost)
                pipe.expire(spend, SPEND_TTL_SECONDS)
            pipe.set(charged_key(self._prefix, ref.name), "metered", ex=SPEND_TTL_SECONDS)
            return await pipe.execute()

        try:
            await self.guard.call("meter usage", write)
        except RedisUnavailable:
            log.warning(
                "redis unavailable: usage of session %s/%s not metered (%s USD)",
                ref.namespace,
                ref.name,
                cost,
            )
        return cost
