"""Per-session model credentials: minted by the operator, checked by the proxy."""

from __future__ import annotations

import base64

import pytest

from codex_api.model_credential import InvalidCredential, SessionRef, mint, verify

KEY = b"k" * 32
REF = SessionRef("team-a", "cx-1234", "6f1d2c3b-0000-4000-8000-000000000001")


def test_a_credential_names_its_session() -> None:
    assert verify(KEY, mint(KEY, REF)) == REF


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "credential",
    [
        "",
        "cxs1",
        "cxs1..",
        "cxs2." + mint(KEY, REF).split(".", 1)[1],  # another version
        mint(KEY, REF) + "A",  # a longer MAC
        mint(KEY, REF)[:-2],  # a shorter one
        "cxs1.%%%.%%%",  # not base64
        "cxs1." + _b64(b"team-a/cx-1234") + "." + _b64(b"x" * 32),  # two parts, wrong MAC
        "x" * 2000,  # oversized
        "cxs1.a.b.c",
    ],
)
def test_malformed_or_forged_credentials_are_refused(credential: str) -> None:
    with pytest.raises(InvalidCredential):
        verify(KEY, credential)


def test_a_credential_cannot_be_moved_to_another_session() -> None:
    """Swapping the named session keeps the MAC of the first: refused."""
    _, _, mac = mint(KEY, REF).split(".")
    for other in ("team-a/cx-9999/" + REF.uid, f"team-b/cx-1234/{REF.uid}", "team-a/cx-1234/another-uid"):
        with pytest.raises(InvalidCredential):
            verify(KEY, f"cxs1.{_b64(other.encode())}.{mac}")


def test_another_installations_key_is_refused() -> None:
    with pytest.raises(InvalidCredential):
        verify(b"o" * 32, mint(KEY, REF))


def test_short_keys_and_bad_references_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint(b"short", REF)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        verify(b"short", mint(KEY, REF))
    for bad in (SessionRef("a/b", "c", "d"), SessionRef("a", "", "d")):
        with pytest.raises(ValueError):
            mint(KEY, bad)


def test_the_credential_does_not_contain_the_key() -> None:
    assert KEY.decode() not in mint(KEY, REF)
