"""Service credentials: bearer tokens ``svt_<id>_<secret>`` with one role each.

Only ``sha256(secret)`` is stored; tokens carry 256 bits of randomness, so a fast hash is enough (no
password-style KDF is needed). Lookups are by the non-secret id; the hash is compared in constant time,
and an unknown id is compared against a dummy hash so both paths do the same work.

Every token row carries the vault's MAC (under the audit HMAC key, which the database does not hold)
over all its fields, revocation included: a row a database writer inserted, or un-revoked, fails it
and is refused (audited as ``token row fails its MAC``).

``signer`` tokens obtain plaintext sessions and ``admin`` tokens mint tokens, so neither can be minted
over the API (an admin would otherwise reach plaintext in two calls): only the CLI, run by an operator
with the database and the audit keys, creates them. The API mints ``ingest`` and ``auditor`` tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vault.audit import AuditKeys
from vault.errors import AuthError, Forbidden, InvalidRequest, NotFound, TokenForged, Unauthorized
from vault.service._audit import Auditor, Context
from vault.service._batch import Batcher
from vault.service._ids import NAME_PATTERN, PURPOSE_PATTERN
from vault.service._principal import Principal, Role
from vault.settings import MAX_LEASE_TTL
from vault.store import Store, TokenRow

__all__ = [
    "API_MINTABLE",
    "MAX_EXPIRES_IN",
    "Principal",
    "Role",
    "TokenInfo",
    "TokenService",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
]

API_MINTABLE = frozenset({Role.INGEST, Role.AUDITOR})
MAX_EXPIRES_IN = 10 * 366 * 86400  # ten years, in seconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAC_PURPOSE = "service-token"
_MAX_PURPOSES = 64

_TOKEN_RE = re.compile(r"svt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_HASH = hashlib.sha256(b"session-vault: no such token").digest()
_NAME_RE = re.compile(NAME_PATTERN)
_PURPOSE_RE = re.compile(PURPOSE_PATTERN)


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


def _us(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


def _row_payload(row: TokenRow) -> bytes:
    body = {
        "v": "sv-token-1",
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "secret_hash": row.secret_hash.hex(),
        "purposes": None if row.purposes is None else list(row.purposes),
        "max_ttl_seconds": row.max_ttl_seconds,
        "created_us": _us(row.created_at),
        "expires_us": _us(row.expires_at),
        "revoked_us": _us(row.revoked_at),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _sealed(keys: AuditKeys, row: TokenRow) -> TokenRow:
    return dataclasses.replace(row, mac=keys.mac(_row_payload(row), purpose=_MAC_PURPOSE))


def _genuine(keys: AuditKeys, row: TokenRow) -> bool:
    return keys.mac_ok(_row_payload(row), row.mac, purpose=_MAC_PURPOSE)


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
    """Create a token; return ``(token, info)``. The token string exists only in this return value.

    Over the API (``ctx`` has a principal) only :data:`API_MINTABLE` roles: a ``signer`` or ``admin``
    token is refused with :class:`Forbidden`, and the refusal is audited.
    """
    if ctx.principal is not None and role not in API_MINTABLE:
        async with store.transaction() as tx:
            await tx.insert_audit(
                auditor.record(ctx, "token.create", "denied", detail=f"{role.value} via api")
            )
        raise Forbidden("signer and admin tokens are created with the CLI only (session-vault token create)")
    if not _NAME_RE.fullmatch(name):
        raise InvalidRequest("a token name is 1-128 letters, digits, spaces or ._:@/-")
    if expires_in is not None and not 0 < expires_in <= MAX_EXPIRES_IN:
        raise InvalidRequest(f"expires-in must be 1 to {MAX_EXPIRES_IN} seconds")
    if max_ttl_seconds is not None and not 0 < max_ttl_seconds <= MAX_LEASE_TTL:
        raise InvalidRequest(f"max-ttl must be 1 to {MAX_LEASE_TTL} seconds")
    if purposes is not None and len(purposes) > _MAX_PURPOSES:
        raise InvalidRequest(f"a token names at most {_MAX_PURPOSES} purposes")
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
    row = _sealed(auditor.keys, row)
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
        row = await tx.token(token_id)
        if row is None or row.revoked_at is not None:
            raise NotFound("no such active token")
        revoked = _sealed(auditor.keys, dataclasses.replace(row, revoked_at=now))
        assert revoked.mac is not None
        if not await tx.revoke_token(token_id, now, revoked.mac):
            raise NotFound("no such active token")
        await tx.insert_audit(auditor.record(ctx, "token.revoke", "ok", detail=token_id))


async def authenticate(
    store: Store,
    keys: AuditKeys,
    token: str | None,
    *,
    role: Role,
    now: datetime,
    lookup: Callable[[str], Awaitable[TokenRow | None]] | None = None,
) -> Principal:
    """Resolve a bearer token to a principal with ``role``.

    Raises :class:`Unauthorized` for a missing, malformed, unknown, revoked or expired token (without
    saying which), :class:`TokenForged` (an Unauthorized) when the row fails the vault's MAC, and
    :class:`Forbidden` for a valid token of another role. The caller audits failures.
    """
    match = _TOKEN_RE.fullmatch(token or "")
    if match is None:
        raise Unauthorized()
    token_id, secret = match.groups()
    if lookup is not None:
        row = await lookup(token_id)
    else:
        async with store.read() as tx:
            row = await tx.token(token_id)
    stored = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(stored, _hash(secret)) or row is None:
        raise Unauthorized()
    if not _genuine(keys, row):
        raise TokenForged()
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


_CLAIMED_ID = re.compile(r"svt_([0-9a-f]{16})_")


class TokenService:
    """Service credentials for the API: create (``ingest`` and ``auditor`` only over the API), list,
    revoke, and authenticate requests, every failure audited."""

    def __init__(
        self,
        *,
        store: Store,
        auditor: Auditor,
        clock: Callable[[], datetime],
        batch_max_size: int = 64,
        batch_max_inflight: int = 1,
    ) -> None:
        self.store = store
        self.auditor = auditor
        self.clock = clock
        # Token lookups that arrive together share one statement (no transaction: a read).
        self._lookups: Batcher[str, TokenRow | None] = Batcher(
            self._lookup_batch, max_size=batch_max_size, max_inflight=batch_max_inflight
        )

    async def _lookup_batch(self, token_ids: Sequence[str]) -> list[TokenRow | None]:
        async with self.store.read() as tx:
            rows = await tx.tokens_by_id(sorted(set(token_ids)))
        return [rows.get(token_id) for token_id in token_ids]

    async def create(
        self, ctx: Context, *, role: Role, name: str, expires_in: int | None = None
    ) -> tuple[str, TokenInfo]:
        return await create_token(
            self.store, self.auditor, ctx, role=role, name=name, now=self.clock(), expires_in=expires_in
        )

    async def list(self) -> list[TokenInfo]:
        return await list_tokens(self.store)

    async def revoke(self, ctx: Context, token_id: str) -> None:
        await revoke_token(self.store, self.auditor, ctx, token_id, now=self.clock())

    async def authenticate(self, token: str | None, role: Role, ctx: Context) -> Principal:
        """The principal for ``token`` if it has ``role``; failures are audited, then raised."""
        try:
            return await authenticate(
                self.store, self.auditor.keys, token, role=role, now=self.clock(), lookup=self._lookups.submit
            )
        except AuthError as exc:
            claimed = _CLAIMED_ID.match(token or "")
            outcome = "denied" if isinstance(exc, Forbidden) else "unauthenticated"
            why = "token row fails its MAC" if isinstance(exc, TokenForged) else exc.code
            record = self.auditor.record(
                ctx, "auth.failure", outcome, detail=f"{why}; needs {role.value}",
                actor_token_id=claimed.group(1) if claimed else None,
            )  # fmt: skip
            async with self.store.transaction() as tx:
                await tx.insert_audit(record)
            raise
