"""Signed turn requests: only the operator may hand a turn to a runner's agent.

A warm runner pod (issue 14) runs an agent that takes turns over HTTP. The
pod holds no Kubernetes credential and no secret that would let anything in
it, the model's own commands included, forge a request: the operator signs
each request with an Ed25519 private key that never leaves it, and the pod
holds only the public key. A signature binds

- the method and path (a turn is not an interrupt),
- the pod's UID (a request for one pod is worthless at another),
- the time (within MAX_SKEW_SECONDS of the agent's clock),
- a nonce (the agent remembers the nonces of that window: no replay),
- the SHA-256 of the body (the prompt, the settings, the session).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from .common import SandboxLevel
from .session import MAX_PROMPT, TIMEOUT_MAX, Usage

HEADER_SIGNATURE = "X-Codex-Signature"
HEADER_TIME = "X-Codex-Time"
HEADER_NONCE = "X-Codex-Nonce"
MAX_SKEW_SECONDS = 30.0
_DOMAIN = b"codex-turn-request-v1"
_MAX_NONCE = 64


class Rejected(Exception):
    """The request is not the operator's, or not for this pod, or not now (safe to show)."""


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def _message(method: str, path: str, pod_uid: str, stamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return b"\n".join(
        part.encode() if isinstance(part, str) else part
        for part in (_DOMAIN, method.upper(), path, pod_uid, stamp, nonce, digest)
    )


def sign(
    key: Ed25519PrivateKey, *, method: str, path: str, pod_uid: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers that make this request the operator's, for this pod, now."""
    stamp = f"{time.time() if now is None else now:.3f}"
    nonce = secrets.token_urlsafe(18)
    signature = key.sign(_message(method, path, pod_uid, stamp, nonce, body))
    return {
        HEADER_SIGNATURE: base64.urlsafe_b64encode(signature).decode(),
        HEADER_TIME: stamp,
        HEADER_NONCE: nonce,
    }


class NonceWindow:
    """The nonces seen within the accepted time window (bounded: the oldest go first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit = limit

    def claim(self, nonce: str, now: float) -> bool:
        """False when the nonce was seen in the window (a replay)."""
        while self._seen and (
            next(iter(self._seen.values())) < now - 2 * MAX_SKEW_SECONDS or len(self._seen) >= self._limit
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def verify(
    key: Ed25519PublicKey,
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    pod_uid: str,
    body: bytes,
    nonces: NonceWindow,
    now: float | None = None,
) -> None:
    """Raises Rejected unless the operator signed exactly this request for this pod, just now."""
    now = time.time() if now is None else now
    signature, stamp, nonce = (headers.get(h) for h in (HEADER_SIGNATURE, HEADER_TIME, HEADER_NONCE))
    if not signature or not stamp or not nonce or len(nonce) > _MAX_NONCE or len(signature) > 128:
        raise Rejected("the request is not signed")
    try:
        at = float(stamp)
        raw = base64.urlsafe_b64decode(signature.encode())
    except ValueError:
        raise Rejected("the request's signature is malformed") from None
    if not abs(now - at) <= MAX_SKEW_SECONDS:
        raise Rejected("the request is too old or from the future")
    try:
        key.verify(raw, _message(method, path, pod_uid, stamp, nonce, body))
    except InvalidSignature:
        raise Rejected(
            "the signature does not match (not the operator's, not this pod, or altered)"
        ) from None
    if not nonces.claim(nonce, now):
        raise Rejected("the request was already used")


# --------------------------------------------------------------------------- what is signed


class TurnOrder(BaseModel):
    """The body of `POST /v1/turns`: one turn of one session, for one pod's agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(min_length=1, max_length=63)
    session: str = Field(min_length=1, max_length=253)
    session_uid: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    sandbox: SandboxLevel
    # None: a new thread; else the conversation's thread, resumed when not loaded.
    thread_id: str | None = Field(default=None, max_length=128)
    timeout_seconds: float = Field(gt=0, le=TIMEOUT_MAX)
    # The session's model credential (codex_api.model_credential), never a provider key.
    credential: str | None = Field(default=None, max_length=4096)
    # per-action: Codex asks before each command, patch or wider permission
    # (approval policy "untrusted"); each ask waits, pending at GET /v1/actions,
    # for the operator's answer. never: Codex asks nothing (the turn was approved whole).
    approvals: Literal["never", "per-action"] = "never"


class TurnReport(BaseModel):
    """What the agent answers: how the turn ended, in the terms of a runner's result."""

    model_config = ConfigDict(extra="forbid")

    session_uid: str
    thread_id: str
    turn_id: str
    status: Literal["completed", "interrupted", "failed"]
    final_message: str | None = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    commands: int = 0
    file_changes: int = 0
    # The final message was cut to fit (a report kept in a termination message).
    truncated: bool = False

    def bounded(self, limit: int) -> str:
        """This report as JSON of at most `limit` bytes: the final message (then the
        error) is cut to fit. A live pod leaves its last report so in its
        termination message, for an operator that was away when it was sent."""
        text = self.model_dump_json()
        size = len(text.encode())
        if size <= limit:
            return text
        cut = self.model_copy(update={"error": (self.error or "")[:300] or None, "truncated": True})
        message = (self.final_message or "").encode()
        room = max(len(message) - (len(cut.model_dump_json().encode()) - limit) - 16, 0)
        return cut.model_copy(
            update={"final_message": message[:room].decode(errors="ignore")}
        ).model_dump_json()
