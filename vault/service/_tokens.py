"""Service credentials: bearer tokens ``svt_<id>_<secret>`` with one role each.

Only ``sha256(secret)`` is stored; tokens carry 256 bits of randomness, so a fast hash is enough (no
password-style KDF is needed). Lookups are by the non-secret id; the hash is compared in constant time,
and an unknown id is compared against a dummy hash so both paths do the same work.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from vault.service._audit import Auditor, Context
from vault.service._principal import Principal, Role
from vault.store import Store, TokenRow

__all__ = ["Principal", "Role", "TokenInfo", "authenticate", "create_token", "list_tokens", "revoke_token"]

_TOKEN_RE = re.compile(r"svt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_HASH = hashlib.sha256(b"session-vault: no such token").digest()
_NAME_RE = re.compile(r"[A-Za-z0-9 ._:@/-]{1,128}")
_PURPOSE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    purposes: tuple[str, ...] | None
    max_ttl_seconds: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        purposes=row.purposes,
        max_ttl_seconds=row.max_ttl_seconds,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


async def create_token(
    store: Store,
    auditor: Auditor,
    ctx: Context,
    *,
    role: Role,
    name: str,
    now: datetime,
    expires_in: int | None = None,
    purposes: tuple[str, ...] | None = None,
    max_ttl_seconds: int | None = None,
) -> tuple[str, TokenInfo]:
    """Create a token; return ``(token, info)``. The token string exists only in this return value."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidRequest("a token name is 1-128 letters, digits, spaces or ._:@/-")
    if expires_in is not None and expires_in <= 0:
        raise InvalidRequest("expires-in must be a positive number of seconds")
    if max_ttl_seconds is not None and max_ttl_seconds <= 0:
        raise InvalidRequest("max-ttl must be a positive number of seconds")
    if purposes is not None and not all(_PURPOSE_RE.fullmatch(p) for p in purposes):
        raise InvalidRequest("a purpose is 1-64 letters, digits or ._:-")
    if role is not Role.SIGNER and (purposes is not None or max_ttl_seconds is not None):
        raise InvalidRequest("purposes and max-ttl apply to signer tokens only")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = TokenRow(
        id=token_id,
        name=name,
        role=role.value,
        secret_hash=_hash(secret),
        purposes=purposes,
        max_ttl_seconds=max_ttl_seconds,
        created_at=now,
        expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
        revoked_at=None,
    )
    async with store.transaction() as tx:
        await tx.insert_token(row)
        await tx.insert_audit(
            auditor.record(ctx, "token.create", "ok", detail=f"{role.value} {token_id} {name}")
        )
    return f"svt_{token_id}_{secret}", _info(row)


async def list_tokens(store: Store) -> list[TokenInfo]:
    async with store.transaction() as tx:
        return [_info(row) for row in await tx.tokens()]


async def revoke_token(store: Store, auditor: Auditor, ctx: Context, token_id: str, *, now: datetime) -> None:
    async with store.transaction() as tx:
        if not await tx.revoke_token(token_id, now):
            raise NotFound("no such active token")
        await tx.insert_audit(auditor.record(ctx, "token.revoke", "ok", detail=token_id))


async def authenticate(store: Store, token: str | None, *, role: Role, now: datetime) -> Principal:
    """Resolve a bearer token to a principal with ``role``.

    Raises :class:`Unauthorized` for a missing, malformed, unknown, revoked or expired token (without
    saying which) and :class:`Forbidden` for a valid token of another role. The caller audits failures.
    """
    match = _TOKEN_RE.fullmatch(token or "")
    if match is None:
        raise Unauthorized()
    token_id, secret = match.groups()
    async with store.transaction() as tx:
        row = await tx.token(token_id)
    stored = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(stored, _hash(secret)) or row is None:
        raise Unauthorized()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise Unauthorized()
    if row.role != role.value:
        raise Forbidden()
    return Principal(
        token_id=row.id,
        name=row.name,
        role=Role(row.role),
        purposes=row.purposes,
        max_ttl_seconds=row.max_ttl_seconds,
    )
