"""The gateway's Redis-backed guard: rate limits, a monthly budget per user
and an opt-in response cache.

Redis is a cache, never the truth: sessions are CodexSessions and their cost
is in their status. So the guard is built to be lost. Every operation has the
``[redis].timeout_ms`` time limit; on a connection error or timeout the guard
logs one warning, skips Redis for ``[redis].retry_seconds`` (a dead Redis adds
no latency to tool calls) and then tries again with the same client, whose
connection pool reconnects by itself. While Redis is unavailable:

=================  ===========================================================
feature            behaviour
=================  ===========================================================
rate limits        fail open: calls are allowed
response cache     fails open: every lookup is a miss, nothing is stored
monthly budget     fails open, unless ``[limits].budget_fail_closed`` (then
                   :class:`BudgetExceeded`: the budget cannot be checked)
recording spend    dropped with a warning (the cost stays in the CR status)
=================  ===========================================================

Without a Redis URL at all (``url=None``) everything is allowed, the cache is
off and the budget is not enforced.

Keys (``P`` is ``[redis].key_prefix``; user names and session ids are
percent-encoded so that no name can spell another's key)::

    P:rate:u:<user>:<minute>            tool calls of a user in one minute
    P:rate:s:<user>:<session>:<minute>  calls of that user naming that session
    P:spend:<user>:<YYYY-MM>            USD spent by a user in a month (UTC)
    P:charged:<session>                 marker: this session's cost is counted
    P:cache:<sha256>                    a cached response (sha of user, tool, args)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from codex_api.config import CodexMCPConfig
from codex_api.redaction import redact

__all__ = [
    "BudgetExceeded",
    "Guard",
    "GuardError",
    "RateLimited",
    "cache_key",
    "canonical_json",
    "charged_key",
    "month_key",
    "rate_keys",
    "redact_url",
    "redis_url_from_env",
    "spend_key",
]

log = logging.getLogger("codex_gateway.guard")

WINDOW_SECONDS = 60
# A window's counter outlives its minute a little (clock skew between gateway
# replicas), then Redis drops it.
RATE_KEY_TTL_SECONDS = 2 * WINDOW_SECONDS
# A month's spend and the per-session markers: a calendar month plus slack, so
# a session finishing on the 31st and read again days later is not charged twice.
SPEND_TTL_SECONDS = 40 * 86400

T = TypeVar("T")

# Atomically: count a session's cost once. KEYS[1] marker, KEYS[2] month's
# spend; ARGV[1] USD (plain decimal), ARGV[2] expiry in seconds. SET NX
# returns a status table when it set the marker and nil (false) when it existed.
_ADD_COST_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


class GuardError(Exception):
    """A tool call the guard refuses."""


class RateLimited(GuardError):
    """Over a per-user or per-session rate limit; retry after ``retry_after_seconds``."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class BudgetExceeded(GuardError):
    """The user's spend this month reached the budget (or, fail-closed, it cannot be checked)."""


class RedisUnavailable(Exception):
    """Redis is not configured, known to be down, or failed just now."""


# --------------------------------------------------------------------------- pure parts

_SECRET_QUERY = re.compile(r"(?i)pass|auth|token|secret|key|credential")


def redact_url(url: str) -> str:
    """``url`` with its credentials masked, safe to log.

    A password becomes ``***`` (the user name stays); a user info without a
    password is masked whole, since redis-py would send it as the user name and
    people do put tokens there; query values that look like credentials too.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _url_secrets(url: str) -> list[str]:
    """The credential strings of ``url`` (to scrub from error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [url]
    for value in (parts.username, parts.password):
        if value:
            found += [value, unquote(value)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and _SECRET_QUERY.search(key):
            found.append(value)
    # Longest first, so that a secret containing another is scrubbed whole.
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redis_url_from_env(config: CodexMCPConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The Redis URL from the variable ``[redis].url_env`` names; None when unset or empty."""
    env = os.environ if environ is None else environ
    url = env.get(config.redis.url_env, "").strip()
    return url or None


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, UTF-8 as is; NaN is an error."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _part(name: str) -> str:
    # Percent-encoding is injective, so no user or session name can spell
    # another one's key (':' included).
    return quote(name, safe="")


def cache_key(prefix: str, user: str, tool: str, args: Mapping[str, Any]) -> str:
    """The cache key of a call: a sha256 of the canonical JSON of (user, tool, args).

    The user is part of the hash, so one user never sees another's answer.
    Arguments whose value is None are dropped: an omitted optional argument
    and an explicit null mean the same call. Raises TypeError or ValueError
    for arguments that are not JSON.
    """
    present = {k: v for k, v in args.items() if v is not None}
    digest = hashlib.sha256(canonical_json([user, tool, present]).encode("utf-8")).hexdigest()
    return f"{prefix}:cache:{digest}"


def window_of(now: float) -> int:
    """The fixed one-minute window ``now`` (epoch seconds) falls in."""
    return int(now // WINDOW_SECONDS)


def rate_keys(prefix: str, user: str, session: str | None, window: int) -> tuple[str, str | None]:
    """The counter keys of a user, and of the user's calls naming ``session``, in ``window``."""
    user_key = f"{prefix}:rate:u:{_part(user)}:{window}"
    session_key = f"{prefix}:rate:s:{_part(user)}:{_part(session)}:{window}" if session else None
    return user_key, session_key


def month_key(now: float) -> str:
    """``YYYY-MM`` of ``now`` (epoch seconds) in UTC: the budget's calendar month."""
    tm = time.gmtime(now)
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}"


def spend_key(prefix: str, user: str, month: str) -> str:
    return f"{prefix}:spend:{_part(user)}:{month}"


def charged_key(prefix: str, session_id: str) -> str:
    return f"{prefix}:charged:{_part(session_id)}"


def _plain_decimal(value: float) -> str:
    # INCRBYFLOAT gets "0.00001", never "1e-05".
    return format(Decimal(repr(value)), "f")


# --------------------------------------------------------------------------- the guard


class Guard:
    """Rate limits, monthly budget and response cache of the gateway, in Redis.

    ``url`` is the Redis URL (see :func:`redis_url_from_env`), None for no
    Redis. ``clock`` gives epoch seconds (rate windows, budget month);
    ``monotonic`` times the pause after a failure. Both exist for tests.
    """

    def __init__(
        self,
        config: CodexMCPConfig,
        url: str | None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis_cfg = config.redis
        self._limits = config.limits
        self._cache = config.cache
        self._prefix = config.redis.key_prefix
        self._timeout = config.redis.timeout_ms / 1000
        self._clock = clock
        self._monotonic = monotonic
        self._url_shown = redact_url(url) if url else None
        self._secrets = _url_secrets(url) if url else []
        # None: up as far as we know; else skip Redis until this monotonic time.
        self._down_until: float | None = None
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._client: Redis | None = None
        if url is not None:
            try:
                self._client = Redis.from_url(
                    url,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    # One immediate retry (a pooled connection the server closed
                    # while it restarted), no backoff: the time limit is ours.
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as err:
                raise ValueError(
                    f"${config.redis.url_env} is not a usable Redis URL ({self._url_shown}): "
                    f"{self._scrub(str(err))}"
                ) from None
            self._add_cost_script = self._client.register_script(_ADD_COST_LUA)
        elif self._limits.monthly_budget_usd > 0:
            log.warning(
                "redis not configured: url_env=%s is unset; the monthly budget of %s USD is not enforced",
                config.redis.url_env,
                self._limits.monthly_budget_usd,
            )

    # ----------------------------------------------------------------- plumbing

    @property
    def configured(self) -> bool:
        return self._client is not None

    def key(self, kind: str, name: str) -> str:
        """This installation's Redis key for ``name`` of ``kind``."""
        return f"{self._prefix}:{kind}:{_part(name)}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    def _usable(self) -> bool:
        if self._client is None:
            return False
        if self._down_until is None:
            return True
        now = self._monotonic()
        if now < self._down_until:
            return False
        # This call probes; concurrent calls keep skipping until it is done.
        self._down_until = now + self._redis_cfg.retry_seconds
        return True

    def _succeeded(self) -> None:
        if self._reachable is False:
            log.info("redis reachable again: url=%s", self._url_shown)
        self._down_until = None
        self._reachable = True
        self._last_error = None

    def _failed(self, operation: str, err: BaseException) -> None:
        reason = self._scrub(str(err)) or type(err).__name__
        if isinstance(err, TimeoutError) and not str(err):
            reason = f"no answer within {self._redis_cfg.timeout_ms} ms"
        was_up = self._reachable is not False
        self._reachable = False
        self._last_error = f"{type(err).__name__}: {reason}"
        self._down_until = self._monotonic() + self._redis_cfg.retry_seconds
        if was_up:
            log.warning(
                "redis unavailable: url=%s operation=%s error=%s; rate limits and cache fail open, "
                "budget %s, spend is not recorded; retrying every %g s",
                self._url_shown,
                operation,
                self._last_error,
                "fails closed" if self._limits.budget_fail_closed else "fails open",
                self._redis_cfg.retry_seconds,
            )
        else:
            log.debug("redis still unavailable: operation=%s error=%s", operation, self._last_error)

    async def call(self, operation: str, command: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``command`` within the time limit; raise :class:`RedisUnavailable` instead of failing."""
        if not self._usable():
            raise RedisUnavailable(operation)
        assert self._client is not None
        try:
            async with asyncio.timeout(self._timeout):
                result = await command(self._client)
        except (RedisError, OSError, TimeoutError) as err:
            self._failed(operation, err)
            raise RedisUnavailable(operation) from None
        self._succeeded()
        return result

    # ----------------------------------------------------------------- rate limits

    async def check_rate(self, user: str, session: str | None = None) -> None:
        """Count a tool call; raise :class:`RateLimited` when over a limit.

        Fixed one-minute windows (by ``clock``): one transaction INCRements the
        user's counter (and, for a call naming ``session``, the counter of this
        user's calls naming it) and sets their expiry. The call that makes a
        count exceed the limit, and every later one in that minute, is
        refused; refused calls count too. The session counter is per user, so
        nobody can use up the limit of someone else's session by naming it.
        Fails open.
        """
        per_user = self._limits.requests_per_minute_per_user
        per_session = self._limits.requests_per_minute_per_session if session else 0
        if self._client is None or not (per_user or per_session):
            return
        now = self._clock()
        window = window_of(now)
        user_key, session_key = rate_keys(self._prefix, user, session, window)
        checks: list[tuple[str, int, str]] = []
        if per_user:
            checks.append((user_key, per_user, "tool calls per minute"))
        if per_session and session_key is not None:
            checks.append((session_key, per_session, f"calls per minute naming session {session!r}"))

        async def count(r: Redis) -> list[Any]:
            async with r.pipeline(transaction=True) as pipe:
                for key, _, _ in checks:
                    pipe.incr(key)
                    pipe.expire(key, RATE_KEY_TTL_SECONDS)
                return await pipe.execute()

        try:
            replies = await self.call("rate limit", count)
        except RedisUnavailable:
            return
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        for (_, limit, what), counted in zip(checks, replies[0::2], strict=True):
            if int(counted) > limit:
                raise RateLimited(
                    f"rate limit reached: at most {limit} {what}; try again in {retry_after} s",
                    retry_after,
                )

    # ----------------------------------------------------------------- budget

    async def month_spend(self, user: str) -> float | None:
        """USD recorded for ``user`` this calendar month (UTC); None without Redis."""
        key = spend_key(self._prefix, user, month_key(self._clock()))
        try:
            raw = await self.call("read spend", lambda r: r.get(key))
        except RedisUnavailable:
            return None
        return float(raw) if raw is not None else 0.0

    async def check_budget(self, user: str) -> None:
        """Raise :class:`BudgetExceeded` when ``user``'s spend this month reached the budget.

        No budget (0) or no Redis configured: allowed. Redis unavailable:
        allowed, unless ``budget_fail_closed``.
        """
        budget = self._limits.monthly_budget_usd
        if budget <= 0 or self._client is None:
            return
        spent = await self.month_spend(user)
        if spent is None:
            if self._limits.budget_fail_closed:
                raise BudgetExceeded("budget cannot be checked: Redis unavailable")
            return
        if spent >= budget:
            raise BudgetExceeded(
                f"monthly budget reached: {spent:.2f} of {budget:.2f} USD spent in "
                f"{month_key(self._clock())} (UTC); it resets at the start of next month"
            )

    async def add_cost(self, user: str, session_id: str, usd: float) -> bool:
        """Add a finished session's cost to ``user``'s month, once per ``session_id``.

        True when counted now; False when already counted, zero, or dropped
        because Redis is unavailable (logged: the cost is still in the CR status).
        """
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"a session's cost must be a finite number >= 0, got {usd!r}")
        if self._client is None or usd == 0:
            return False
        marker = charged_key(self._prefix, session_id)
        spend = spend_key(self._prefix, user, month_key(self._clock()))
        amount = _plain_decimal(usd)
        try:
            added = await self.call(
                "record spend",
                lambda r: self._add_cost_script(
                    keys=[marker, spend], args=[amount, SPEND_TTL_SECONDS], client=r
                ),
            )
        except RedisUnavailable:
            log.warning(
                "redis unavailable: spend of session %s (user=%s, %s USD) not recorded in the budget",
                session_id,
                user,
                amount,
            )
            return False
        return bool(added)

    # ----------------------------------------------------------------- cache

    async def cache_get(self, user: str, tool: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """A cached response of this user's identical call, or None (miss, cache off, Redis down).

        The caller decides what is cacheable (e.g. finished read-only turns only).
        """
        if not self._cache.enabled or self._client is None:
            return None
        try:
            key = cache_key(self._prefix, user, tool, args)
        except (TypeError, ValueError):
            return None
        try:
            raw = await self.call("cache read", lambda r: r.get(key))
        except RedisUnavailable:
            return None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def cache_put(
        self, user: str, tool: str, args: Mapping[str, Any], value: Mapping[str, Any]
    ) -> bool:
        """Cache ``value`` for ``[cache].ttl_seconds``; True when stored.

        Not stored: cache off, Redis unavailable, arguments or value not JSON,
        or a value larger than ``[cache].max_response_bytes``.
        """
        if not self._cache.enabled or self._client is None:
            return False
        try:
            key = cache_key(self._prefix, user, tool, args)
            data = canonical_json(value).encode("utf-8")
        except (TypeError, ValueError):
            return False
        if len(data) > self._cache.max_response_bytes:
            log.debug("cache: response of %s (%d bytes) too large to cache", tool, len(data))
            return False
        ttl = self._cache.ttl_seconds
        try:
            await self.call("cache write", lambda r: r.set(key, data, ex=ttl))
        except RedisUnavailable:
            return False
        return True

    # ----------------------------------------------------------------- health

    def status(self) -> dict[str, Any]:
        """For the health endpoint; ``reachable`` is None until Redis was first used."""
        return {
            "configured": self._client is not None,
            "reachable": self._reachable,
            "last_error": self._last_error,
        }

    async def ping(self) -> bool:
        """Ask Redis now, even during the pause after a failure; updates :meth:`status`."""
        if self._client is None:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as err:
            self._failed("ping", err)
            return False
        self._succeeded()
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
