"""Short signed tokens for URLs that must authorise themselves (upload URLs, upload bearer tokens).

A token is `base64url(JSON claims) "." base64url(HMAC-SHA256)`, with an `exp`
claim in Unix seconds. The secret is server-wide (the job database's
`server_secrets`), so any API replica can check a token another one made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


class InvalidTokenError(Exception):
    """Malformed, forged, expired or for another purpose."""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, body: str) -> str:
        return _encode(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, claims: dict[str, Any], *, expires_at: float) -> str:
        body = _encode(json.dumps({**claims, "purpose": purpose, "exp": int(expires_at)}, sort_keys=True).encode())
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, purpose: str, *, now: float) -> dict[str, Any]:
        """The claims of a valid token. Raises `InvalidTokenError`."""
        # Tokens are ASCII by construction; compare_digest refuses to compare any other str.
        if not token.isascii():
            raise InvalidTokenError("invalid token")
        body, _, mac = token.partition(".")
        if not body or not mac or not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidTokenError("invalid token")
        try:
            claims: dict[str, Any] = json.loads(_decode(body))
        except (ValueError, UnicodeDecodeError):
            raise InvalidTokenError("invalid token") from None
        if claims.get("purpose") != purpose:
            raise InvalidTokenError("invalid token")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < now:
            raise InvalidTokenError("expired token")
        return claims
