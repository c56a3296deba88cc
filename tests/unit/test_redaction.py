"""Secrets never echo back: each pattern is caught, ordinary text is not."""

from __future__ import annotations

import pytest

from codex_api.redaction import MASK, contains_secret, redact, shorten

SECRETS = [
    "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "sk-ant-api03-abcdefghijklmnopqrstuv",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "xoxb-123456789012-abcdefghijkl",
    "AIzaSyA-abcdefghijklmnopqrstuvwxyz012345",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_known_secret_shapes_are_masked(secret: str) -> None:
    text = f"please use {secret} to deploy"
    out = redact(text)
    assert secret not in out and MASK in out
    assert out.startswith("please use ") and out.endswith(" to deploy")
    assert contains_secret(text)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('OPENAI_API_KEY="abc123def456"', "OPENAI_API_KEY="),
        ("password: hunter2", "password: "),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: "),
        ("db_secret=s3cr3t-value, next", ", next"),
    ],
)
def test_assignments_keep_the_name_and_hide_the_value(text: str, kept: str) -> None:
    out = redact(text)
    assert kept in out and MASK in out
    for value in ("abc123def456", "hunter2", "abcdefghijklmnop1234", "s3cr3t-value"):
        assert value not in out


@pytest.mark.parametrize(
    "text",
    [
        "Write a factorial function in Python",
        "the token bucket algorithm limits rates",
        "sk-short",
        "def f(x): return x",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text
    assert not contains_secret(text)


def test_shorten() -> None:
    assert shorten("abc", 5) == "abc"
    assert shorten("abcdefgh", 5) == "abcd…"
