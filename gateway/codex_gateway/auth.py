"""Bearer tokens -> users. The token itself is never logged or forwarded:
the gateway talks to Kubernetes with its own credentials and only the user
name leaves this module (as ``spec.requestedBy``)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from pathlib import Path

import yaml
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

MIN_TOKEN_LENGTH = 16
MAX_USER_LENGTH = 256


class TokenFileError(ValueError):
    pass


class TokenStore:
    """A TokenVerifier fed from a mapping {token: user}."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        checked: dict[str, str] = {}
        for token, user in tokens.items():
            if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
                raise TokenFileError(
                    f"every token must be a string of at least {MIN_TOKEN_LENGTH} characters"
                )
            if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_LENGTH:
                raise TokenFileError(
                    f"the user of a token must be a non-empty string of at most {MAX_USER_LENGTH}"
                )
            checked[token] = user
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

    def user_for(self, token: str) -> str | None:
        found = None
        # Constant-time comparison against every entry: no early exit.
        for known, user in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = user
        return found

    async def verify_token(self, token: str) -> AccessToken | None:
        user = self.user_for(token)
        if user is None:
            return None
        return AccessToken(token=token, client_id=user, scopes=[], subject=user)


def current_user() -> str | None:
    """The authenticated caller of the current request, if any."""
    token = get_access_token()
    return token.subject or token.client_id if token else None
