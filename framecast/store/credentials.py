"""API keys, webhook signing keys and server secrets: the contract and its SQL implementation.

Only a key's sha256 is stored; the key is shown once, when it is made. Keys
are high-entropy random strings, so a fast hash is enough (as for GitHub
tokens): nobody can brute-force 256 random bits. Signing keys and secrets are
stored as they are, because the server must use them; whoever can read the
database can sign webhooks.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import sqlalchemy as sa

from framecast.store.database import SqlDatabase, api_keys, server_secrets, signing_keys


class DuplicateKeyNameError(ValueError):
    """Another API key already has this name."""


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    name: str
    secret_sha256: str
    created_at: float
    revoked_at: float | None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class SigningKeyRecord:
    kid: str
    algorithm: str
    private_key: str  # base64 of the raw private key
    created_at: float
    retired_at: float | None


class CredentialStore(Protocol):
    """Safe to call from several processes and machines at once."""

    def add_api_key(self, record: ApiKeyRecord) -> None:
        """Raises `DuplicateKeyNameError` when the name is taken (revoked keys keep their names)."""
        ...

    def find_api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Oldest first, revoked ones included."""
        ...

    def revoke_api_key(self, key_id_or_name: str, *, now: float) -> ApiKeyRecord | None:
        """Idempotent: a revoked key stays revoked at its first time. None when no key matches."""
        ...

    def add_signing_key(self, record: SigningKeyRecord) -> None: ...

    def list_signing_keys(self) -> list[SigningKeyRecord]:
        """Newest first, retired ones included."""
        ...

    def retire_signing_key(self, kid: str, *, now: float) -> bool:
        """Idempotent. False when no key has this id."""
        ...

    def secret(self, name: str, *, now: float) -> str:
        """The server-wide secret `name`, made (256 random bits, hex) on first use. Every caller gets the same."""
        ...


class SqlCredentialStore:
    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    def add_api_key(self, record: ApiKeyRecord) -> None:
        try:
            with self.database.write() as connection:
                taken = connection.execute(sa.select(api_keys.c.key_id).where(api_keys.c.name == record.name)).first()
                if taken is not None:
                    raise DuplicateKeyNameError(record.name)
                connection.execute(api_keys.insert().values(**asdict(record)))
        except sa.exc.IntegrityError as error:
            raise DuplicateKeyNameError(record.name) from error

    def find_api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self.database.read() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
        return None if row is None else ApiKeyRecord(**row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self.database.read() as connection:
            rows = connection.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id))
            return [ApiKeyRecord(**row) for row in rows.mappings()]

    def revoke_api_key(self, key_id_or_name: str, *, now: float) -> ApiKeyRecord | None:
        match = sa.or_(api_keys.c.key_id == key_id_or_name, api_keys.c.name == key_id_or_name)
        with self.database.write() as connection:
            connection.execute(api_keys.update().where(match, api_keys.c.revoked_at.is_(None)).values(revoked_at=now))
            row = connection.execute(sa.select(api_keys).where(match)).mappings().first()
        return None if row is None else ApiKeyRecord(**row)

    def add_signing_key(self, record: SigningKeyRecord) -> None:
        with self.database.write() as connection:
            connection.execute(signing_keys.insert().values(**asdict(record)))

    def list_signing_keys(self) -> list[SigningKeyRecord]:
        with self.database.read() as connection:
            rows = connection.execute(
                sa.select(signing_keys).order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
            )
            return [SigningKeyRecord(**row) for row in rows.mappings()]

    def retire_signing_key(self, kid: str, *, now: float) -> bool:
        with self.database.write() as connection:
            connection.execute(
                signing_keys.update()
                .where(signing_keys.c.kid == kid, signing_keys.c.retired_at.is_(None))
                .values(retired_at=now)
            )
            return (
                connection.execute(sa.select(signing_keys.c.kid).where(signing_keys.c.kid == kid)).first() is not None
            )

    def secret(self, name: str, *, now: float) -> str:
        lookup = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
        try:
            with self.database.write() as connection:
                value = connection.execute(lookup).scalar()
                if value is None:
                    value = secrets.token_hex(32)
                    connection.execute(server_secrets.insert().values(name=name, value=value, created_at=now))
        except sa.exc.IntegrityError:
            # Another process made it first (PostgreSQL does not serialise these transactions): use theirs.
            with self.database.read() as connection:
                value = connection.execute(lookup).scalar_one()
        return str(value)


def active_signing_keys(records: Sequence[SigningKeyRecord]) -> list[SigningKeyRecord]:
    """The keys a JWKS publishes: not retired, newest first (the first one signs)."""
    return sorted((record for record in records if record.retired_at is None), key=lambda r: -r.created_at)
