"""Usage and spend, counted at the proxy from what the provider reported.

Keys (``P`` is ``[redis].key_prefix``, names percent-encoded as the gateway's
guard does; hashes of input, cached_input, output, reasoning, requests and
usd)::

    P:usage:s:<namespace>/<session>       one session, all its turns
    P:usage:u:<user>:<YYYY-MM>            one user, one month (UTC)
    P:usage:p:<provider>:<YYYY-MM>        one provider, one month
    P:spend:<user>:<YYYY-MM>              the monthly budget's figure (the gateway reads it)
    P:charged:<session>                   set: the gateway does not add this session again

All in one transaction per model request. Before a request the user's
monthly budget is checked (codex_gateway.guard: the same rule, the same
fail-open / fail-closed choice with Redis down), so a turn already running
stops at its next model request once the budget is spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from codex_api.config import CodexMCPConfig
from codex_api.pricing import usd
from codex_api.session import Usage
from codex_gateway.guard import (
    SPEND_TTL_SECONDS,
    Guard,
    RedisUnavailable,
    charged_key,
    month_key,
    spend_key,
)

from .sessions import LiveSession

log = logging.getLogger("codex_proxy.meter")


class Meter:
    def __init__(
        self, guard: Guard, config: CodexMCPConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.guard = guard
        self._config = config
        self._prefix = config.redis.key_prefix
        self._clock = clock

    async def check_budget(self, session: LiveSession) -> None:
        """Raises codex_gateway.guard.BudgetExceeded."""
        await self.guard.check_budget(session.user)

    async def record(self, session: LiveSession, provider: str, model: str, usage: Usage) -> float:
        """Count one model request; returns its USD. Redis down: logged, not counted."""
        cost = usd(usage, model, self._config.cost)
        month = month_key(self._clock())
        ref = session.ref
        keys = [
            self.guard.key("usage:s", f"{ref.namespace}/{ref.name}"),
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
