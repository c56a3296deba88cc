"""The per-session credential a runner pod shows the model proxy instead of a
provider key.

    cxs1.<base64url("<namespace>/<session>/<uid>")>.<base64url(HMAC-SHA256)>

The MAC is over the version, namespace, session name and the session's UID
with a signing key only the operator and the proxy hold. It names exactly one
CodexSession object: a session deleted and created again under the same name
has another UID, so an old credential does not carry over. It is worthless
outside the proxy (no provider accepts it) and, at the proxy, for any other
session; the proxy also refuses it once the session has ended, and from any
address but the session's own runner pod (codex_proxy.sessions).

Nothing here is secret but the signing key: a credential may appear in a
pod's environment, where the model's own commands can read it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

VERSION = "cxs1"
# Well above namespace (63) + name (253) + UID (36) in base64, well below any header limit.
MAX_LENGTH = 1024
MIN_KEY_BYTES = 32


class InvalidCredential(ValueError):
    """Not a credential of this installation (malformed, or the MAC does not match)."""


@dataclass(frozen=True)
class SessionRef:
    namespace: str
    name: str
    uid: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, VERSION.encode() + b"." + body, hashlib.sha256).digest()


def check_key(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the credential signing key must be at least {MIN_KEY_BYTES} bytes")
    return key


def mint(key: bytes, session: SessionRef) -> str:
    for part in (session.namespace, session.name, session.uid):
        if not part or "/" in part:
            raise ValueError(f"not a session reference part: {part!r}")
    body = f"{session.namespace}/{session.name}/{session.uid}".encode()
    return f"{VERSION}.{_b64(body)}.{_b64(_mac(check_key(key), body))}"


def verify(key: bytes, credential: str) -> SessionRef:
    """The session a credential names; InvalidCredential unless this key minted it."""
    if not isinstance(credential, str) or len(credential) > MAX_LENGTH:
        raise InvalidCredential("malformed credential")
    parts = credential.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise InvalidCredential("malformed credential")
    try:
        body, mac = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise InvalidCredential("malformed credential") from None
    if not hmac.compare_digest(mac, _mac(check_key(key), body)):
        raise InvalidCredential("credential not issued by this installation")
    fields = body.decode("utf-8", "replace").split("/")
    if len(fields) != 3 or not all(fields):
        raise InvalidCredential("malformed credential")
    return SessionRef(*fields)


def key_from_env(variable: str, environ: dict[str, str]) -> bytes:
    """The signing key from its variable; ValueError names what is wrong, never the value."""
    raw = environ.get(variable, "")
    if not raw:
        raise ValueError(f"${variable} is unset: session credentials cannot be signed or checked")
    try:
        return check_key(raw.encode())
    except ValueError as err:
        raise ValueError(f"${variable}: {err}") from None
