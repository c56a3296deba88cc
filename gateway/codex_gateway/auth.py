"""Bearer tokens -> identities (user + groups). The token itself is never
logged or forwarded: the gateway talks to Kubernetes with its own
credentials, and only the user name leaves this module (as
``spec.requestedBy``).

Two sources, tried in order:

* a token file (a Kubernetes Secret mounted as a file): a mapping
  ``token: user`` or ``token: {user: NAME, groups: [..]}``;
* optionally, Kubernetes TokenReview: any token the cluster accepts
  (ServiceAccount tokens, OIDC, ...), for the audiences the gateway names.
  The API server answers with the audiences it validated the token for
  (``status.audiences``); an answer that confirms none of ours is a refusal,
  so a token minted for another service (or the API server's own audience)
  is never accepted. Without audiences every token the cluster accepts
  would do, including every pod's ServiceAccount token: only with an
  explicit ``any_audience``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import yaml
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

log = logging.getLogger("codex_gateway.auth")

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 8192
MAX_USER_LENGTH = 256
MAX_GROUPS = 64


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()


def _identity(value: Any) -> Identity:
    user: Any
    groups: Any
    if isinstance(value, str):
        user, groups = value, []
    elif isinstance(value, dict) and set(value) <= {"user", "groups"}:
        user, groups = value.get("user"), value.get("groups", [])
    else:
        raise TokenFileError("the value of a token must be a user name or a mapping {user, groups}")
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_LENGTH:
        raise TokenFileError(f"the user of a token must be a non-empty string of at most {MAX_USER_LENGTH}")
    if (
        not isinstance(groups, list)
        or len(groups) > MAX_GROUPS
        or not all(isinstance(g, str) and 0 < len(g) <= MAX_USER_LENGTH for g in groups)
    ):
        raise TokenFileError(f"the groups of a token must be a list of at most {MAX_GROUPS} names")
    return Identity(user, tuple(groups))


def _access_token(token: str, identity: Identity) -> AccessToken:
    return AccessToken(
        token=token,
        client_id=identity.user,
        scopes=[],
        subject=identity.user,
        claims={"groups": list(identity.groups)},
    )


class Verifier(Protocol):
    async def verify_token(self, token: str) -> AccessToken | None: ...


class TokenStore:
    """A TokenVerifier fed from a mapping {token: user | {user, groups}}."""

    def __init__(self, tokens: Mapping[str, Any]) -> None:
        checked: dict[str, Identity] = {}
        for token, value in tokens.items():
            if not isinstance(token, str) or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
                raise TokenFileError(
                    f"every token must be a string of {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters"
                )
            checked[token] = _identity(value)
        self._tokens = checked

    @classmethod
    def from_file(cls, path: str | Path) -> TokenStore:
        """A YAML or JSON mapping ``token: user``."""
        text = Path(path).read_text()
        try:
            data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise TokenFileError(f"{path}: not a YAML/JSON mapping: {err}") from None
        if not isinstance(data, dict):
            raise TokenFileError(f"{path}: expected a mapping of token to user")
        return cls(data)

    def __len__(self) -> int:
        return len(self._tokens)

    def identity_for(self, token: str) -> Identity | None:
        found = None
        # Constant-time comparison against every entry: no early exit.
        for known, identity in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = identity
        return found

    def user_for(self, token: str) -> str | None:
        identity = self.identity_for(token)
        return identity.user if identity else None

    async def verify_token(self, token: str) -> AccessToken | None:
        identity = self.identity_for(token)
        return _access_token(token, identity) if identity else None


class NoAudience(ValueError):
    """TokenReview without an audience, and without the explicit consent to that."""


class TokenReviewApi(Protocol):
    async def create_token_review(self, body: Any) -> Any: ...


class TokenReviewer:
    """Kubernetes TokenReview as a TokenVerifier (needs `create tokenreviews`).

    A token counts only for the `audiences` the gateway names, and only when
    the API server's answer confirms one of them in ``status.audiences``
    (the API server echoes the audiences it validated; an authenticator that
    ignores audiences echoes none, and is not trusted to have checked them).
    `any_audience` (dangerous, explicit) asks for the API server's own
    audience instead and accepts whatever it authenticates: then any
    ServiceAccount token of the cluster, any pod's, is a gateway identity.

    Answers are cached for `cache_seconds` under a hash of the token, so a
    busy client costs one review per minute, not one per request."""

    def __init__(
        self,
        api_client: Any,
        audiences: Sequence[str] = (),
        cache_seconds: float = 60.0,
        *,
        any_audience: bool = False,
        api: TokenReviewApi | None = None,
    ) -> None:
        self._audiences = [a for a in audiences if a]
        if not self._audiences and not any_audience:
            raise NoAudience(
                "TokenReview needs at least one audience (clients then present tokens minted for it, "
                "e.g. `kubectl create token NAME --audience codex-gateway`); accepting any audience "
                "must be asked for explicitly"
            )
        if self._audiences and any_audience:
            raise NoAudience("give audiences or any_audience, not both")
        self.any_audience = any_audience
        if api is None:
            from kubernetes_asyncio import client as k8s

            # The generated client's method is typed loosely; it is the endpoint `api` stubs.
            api = cast(TokenReviewApi, k8s.AuthenticationV1Api(api_client))
        self._api: TokenReviewApi = api
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Identity | None]] = {}

    @property
    def audiences(self) -> list[str]:
        return list(self._audiences)

    async def verify_token(self, token: str) -> AccessToken | None:
        if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached and cached[0] > time.monotonic():
            identity = cached[1]
        else:
            identity = await self._review(token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + self._ttl, identity)
        return _access_token(token, identity) if identity else None

    async def _review(self, token: str) -> Identity | None:
        from kubernetes_asyncio import client as k8s
        from kubernetes_asyncio.client.exceptions import ApiException

        body = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token, audiences=self._audiences or None))
        try:
            review = await self._api.create_token_review(body)
        except (ApiException, OSError) as err:
            # Not cached as "no": a failing API server must not lock users out for a minute.
            log.warning("TokenReview failed: %s", getattr(err, "reason", None) or type(err).__name__)
            raise _Unavailable() from None
        status = review.status
        if not status or not status.authenticated or not status.user or not status.user.username:
            return None
        if self._audiences:
            confirmed = set(status.audiences or ()) & set(self._audiences)
            if not confirmed:
                # Authenticated, but not for us: a token for another audience, or an
                # authenticator that does not check audiences at all.
                log.warning(
                    "TokenReview: %s authenticated without any of the gateway's audiences; refused",
                    status.user.username,
                )
                return None
        return Identity(status.user.username, tuple(status.user.groups or ()))


class _Unavailable(Exception):
    pass


class VerifierChain:
    """The first verifier that knows the token wins."""

    def __init__(self, *verifiers: Verifier) -> None:
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self.verifiers:
            try:
                found = await verifier.verify_token(token)
            except _Unavailable:
                continue
            if found is not None:
                return found
        return None


def current_identity() -> Identity | None:
    """The authenticated caller of the current request, if any."""
    token = get_access_token()
    if token is None:
        return None
    groups = (token.claims or {}).get("groups") or []
    return Identity(token.subject or token.client_id, tuple(groups))


def current_user() -> str | None:
    identity = current_identity()
    return identity.user if identity else None
