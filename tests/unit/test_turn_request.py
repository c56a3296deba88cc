"""codex_api.turn_request: only the operator's signature, for this pod, now, once."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from codex_api.turn_request import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIME,
    MAX_SKEW_SECONDS,
    NonceWindow,
    Rejected,
    TurnOrder,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign,
    verify,
)

KEY = generate_private_key()
PUBLIC = KEY.public_key()
NOW = 1_800_000_000.0
REQUEST = {"method": "POST", "path": "/v1/turns", "pod_uid": "pod-1", "body": b'{"prompt": "hi"}'}


def check(headers: dict[str, str], nonces: NonceWindow | None = None, **changed: Any) -> None:
    args = {**REQUEST, **changed}
    now = args.pop("now", NOW)
    verify(PUBLIC, headers, nonces=nonces or NonceWindow(), now=now, **args)


def test_the_operators_request_is_accepted_once() -> None:
    headers = sign(KEY, now=NOW, **REQUEST)
    nonces = NonceWindow()
    check(headers, nonces)
    with pytest.raises(Rejected, match="already used"):
        check(headers, nonces)


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        ({"body": b'{"prompt": "rm -rf /"}'}, "does not match"),
        ({"path": "/v1/interrupt"}, "does not match"),
        ({"method": "GET"}, "does not match"),
        ({"pod_uid": "pod-2"}, "does not match"),  # signed for another pod
        ({"now": NOW + MAX_SKEW_SECONDS + 1}, "too old"),
        ({"now": NOW - MAX_SKEW_SECONDS - 1}, "too old or from the future"),
    ],
)
def test_anything_else_is_refused(changed: dict[str, Any], why: str) -> None:
    with pytest.raises(Rejected, match=why):
        check(sign(KEY, now=NOW, **REQUEST), **changed)


def test_another_key_is_refused() -> None:
    with pytest.raises(Rejected, match="does not match"):
        check(sign(generate_private_key(), now=NOW, **REQUEST))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {HEADER_SIGNATURE: "", HEADER_TIME: str(NOW), HEADER_NONCE: "n"},
        {HEADER_SIGNATURE: "!!!not-base64!!!", HEADER_TIME: str(NOW), HEADER_NONCE: "n"},
        {HEADER_SIGNATURE: "AAAA", HEADER_TIME: "yesterday", HEADER_NONCE: "n"},
        {HEADER_SIGNATURE: "A" * 5000, HEADER_TIME: str(NOW), HEADER_NONCE: "n"},
        {HEADER_SIGNATURE: "AAAA", HEADER_TIME: str(NOW), HEADER_NONCE: "n" * 500},
        {HEADER_SIGNATURE: "AAAA", HEADER_TIME: "nan", HEADER_NONCE: "n"},
    ],
)
def test_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(Rejected):
        check(headers)


def test_a_refused_request_does_not_spend_a_nonce() -> None:
    """Otherwise anyone could burn the operator's next nonce by guessing it."""
    headers = sign(KEY, now=NOW, **REQUEST)
    nonces = NonceWindow()
    with pytest.raises(Rejected):
        check(
            {**headers, HEADER_SIGNATURE: sign(generate_private_key(), now=NOW, **REQUEST)[HEADER_SIGNATURE]},
            nonces,
        )
    check(headers, nonces)


def test_the_nonce_window_forgets_only_what_is_too_old_to_verify() -> None:
    nonces = NonceWindow(limit=3)
    assert nonces.claim("a", NOW) and not nonces.claim("a", NOW + 1)
    assert nonces.claim("a", NOW + 2 * MAX_SKEW_SECONDS + 1)  # older than any stamp still accepted
    for n in "bcd":
        assert nonces.claim(n, NOW + 100)
    assert len(nonces._seen) <= 3  # bounded


def test_keys_round_trip_through_pem() -> None:
    again = load_private_key(private_key_pem(KEY))
    check(sign(again, now=NOW, **REQUEST))
    assert load_public_key(public_key_pem(KEY)) == PUBLIC
    with pytest.raises(ValueError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


ORDER = {
    "namespace": "ns",
    "session": "s",
    "session_uid": "u",
    "prompt": "hi",
    "sandbox": "read-only",
    "timeout_seconds": 60,
}


@pytest.mark.parametrize(
    "bad",
    [
        {"extra": "field"},
        {"sandbox": "root"},
        {"prompt": ""},
        {"prompt": "x" * 70_000},
        {"timeout_seconds": 0},
        {"timeout_seconds": 10**9},
        {"session_uid": ""},
        {"thread_id": "t" * 500},
    ],
)
def test_a_turn_order_is_what_it_says_and_nothing_else(bad: dict[str, Any]) -> None:
    TurnOrder.model_validate(ORDER)
    with pytest.raises(ValidationError):
        TurnOrder.model_validate({**ORDER, **bad})
