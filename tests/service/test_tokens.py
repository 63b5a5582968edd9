"""Signed URL tokens."""

from __future__ import annotations

import pytest

from framecast.service.tokens import InvalidTokenError, TokenSigner

SIGNER = TokenSigner(b"s" * 32)


def test_a_token_carries_its_claims_until_it_expires() -> None:
    token = SIGNER.sign("upload", {"key": "uploads/a/b.png"}, expires_at=100.0)
    assert SIGNER.verify(token, "upload", now=100.0) == {"key": "uploads/a/b.png", "purpose": "upload", "exp": 100}
    with pytest.raises(InvalidTokenError, match="expired"):
        SIGNER.verify(token, "upload", now=101.0)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature changed
        lambda token: "e30" + token[3:],  # claims changed
        lambda token: token.split(".")[0],  # no signature
        lambda token: "",
        lambda token: "not.base64!",
        lambda token: token[:-1] + "\x80",  # not ASCII: found by the API fuzzer (tests/api/test_fuzz.py)
    ],
)
def test_forged_tokens_are_refused(mangle: object) -> None:
    token = SIGNER.sign("upload", {"key": "k"}, expires_at=100.0)
    with pytest.raises(InvalidTokenError):
        SIGNER.verify(mangle(token), "upload", now=1.0)  # type: ignore[operator]


def test_a_token_is_valid_for_one_purpose_and_one_secret() -> None:
    token = SIGNER.sign("cdn", {}, expires_at=100.0)
    with pytest.raises(InvalidTokenError):
        SIGNER.verify(token, "upload", now=1.0)
    with pytest.raises(InvalidTokenError):
        TokenSigner(b"t" * 32).verify(token, "cdn", now=1.0)
