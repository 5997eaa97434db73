"""Run ``session-vault`` with experimental changes patched in, to measure what they would gain.

For benchmarks only: vault/ is not changed; this module patches the imported code before the CLI runs.
``SV_WHATIF`` names the changes, joined by ``+`` (empty or ``none``: no change)::

    SV_WHATIF=uvloop+inline-deps python -m bench.whatif serve

- ``uvloop``: the event loop is uvloop's. (Before commit 74709aa ``serve`` ran its servers under
  ``asyncio.run``, on the stock asyncio loop; it now uses uvloop itself, and this change does nothing.)
- ``inline-deps``: FastAPI calls synchronous dependencies (``get_vault``, ``request_context``) inline,
  as it would if they were ``async def``, instead of handing each to a worker thread.
- ``no-access-log``: uvicorn writes no access log line per request (the default since 74709aa, unless
  ``VAULT_ACCESS_LOG`` is set).
- ``token-cache``: ``Vault.authenticate`` answers a token it resolved less than 5 s ago from a
  per-process cache instead of a database transaction (a revoked token would keep working up to 5 s).
- ``raw-sql``: the store's queries on the lease path (token lookup, peek, lock, open lease, insert
  lease, audit insert, lock lease, end lease) send the same SQL text (bench/lease.py ``SQL``, checked
  against what SQLAlchemy compiles) straight to the asyncpg connection under the SQLAlchemy transaction:
  same statements, same round trips, no statement building, compiling, caching or result wrapping.
  PostgreSQL only.

bench/lease.py runs these side by side with ``--whatif``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

CHANGES = ("uvloop", "inline-deps", "no-access-log", "token-cache", "raw-sql")
TOKEN_CACHE_SECONDS = 5.0


def parse(spec: str) -> tuple[str, ...]:
    names = tuple(n for n in spec.split("+") if n and n != "none")
    unknown = set(names) - set(CHANGES)
    if unknown:
        raise SystemExit(f"SV_WHATIF: unknown change(s) {sorted(unknown)}; known: {', '.join(CHANGES)}")
    return names


def _use_uvloop() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _inline_deps() -> None:
    import fastapi.dependencies.utils as utils

    async def call_inline(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return func(*args, **kwargs)

    vars(utils)["run_in_threadpool"] = call_inline


def _no_access_log() -> None:
    import uvicorn

    original = uvicorn.Config.__init__

    def init(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "access_log": False})

    uvicorn.Config.__init__ = init  # type: ignore[method-assign]


def _token_cache() -> None:
    import vault.service._vault as runtime

    original: Callable[..., Awaitable[Any]] = vars(runtime)["authenticate"]
    cache: dict[tuple[str | None, str], tuple[float, Any]] = {}

    async def authenticate(store: Any, token: str | None, *, role: Any, now: Any) -> Any:
        key = (token, str(role))
        hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < TOKEN_CACHE_SECONDS:
            return hit[1]
        principal = await original(store, token, role=role, now=now)
        cache[key] = (time.monotonic(), principal)
        return principal

    vars(runtime)["authenticate"] = authenticate


def _raw_sql() -> None:
    import asyncpg

    from bench.lease import SQL
    from vault.errors import AuditUnavailable
    from vault.store import AuditRecord, LeaseRow, LockedLease, LockedSession, SessionPeek, TokenRow, Tx
    from vault.store._store import _token_row

    async def driver(tx: Tx) -> Any:
        """The asyncpg connection under ``tx``, with the transaction begun (SQLAlchemy begins lazily)."""
        adapted: Any = (await tx.conn.get_raw_connection()).dbapi_connection
        if adapted._transaction is None:
            await adapted._start_transaction()
        return adapted._connection

    async def token(self: Tx, token_id: str) -> TokenRow | None:
        row = await (await driver(self)).fetchrow(SQL["token"], token_id)
        return None if row is None else _token_row(row)

    original_peek = Tx.peek_session

    async def peek_session(
        self: Tx, *, session_id: str | None = None, user_id: str | None = None
    ) -> SessionPeek | None:
        if user_id is None:
            return await original_peek(self, session_id=session_id)
        row = await (await driver(self)).fetchrow(SQL["peek"], user_id, "active", 1)
        return None if row is None else SessionPeek(**dict(row))

    async def lock_session(self: Tx, session_id: str) -> LockedSession | None:
        row = await (await driver(self)).fetchrow(SQL["lock_session"], session_id)
        return None if row is None else LockedSession(**dict(row))

    async def open_lease(self: Tx, session_id: str) -> LeaseRow | None:
        row = await (await driver(self)).fetchrow(SQL["open_lease"], session_id)
        return None if row is None else LeaseRow(**dict(row))

    async def end_lease(self: Tx, lease_id: str, *, now_us: int, reason: str) -> None:
        await (await driver(self)).execute(SQL["end_lease"], now_us, reason, lease_id)

    async def insert_lease(
        self: Tx,
        *,
        lease_id: str,
        session: LockedSession,
        holder_token_id: str,
        purpose: str,
        ttl_seconds: int,
    ) -> int:
        fence: int = await (await driver(self)).fetchval(
            SQL["insert_lease"], lease_id, session.id, session.user_id, session.version, 0, 1, session.id,
            holder_token_id, purpose, ttl_seconds, session.now_us, session.now_us + ttl_seconds * 1_000_000,
        )  # fmt: skip
        return fence

    async def lock_lease(self: Tx, lease_id: str) -> LockedLease | None:
        conn = await driver(self)
        session = await conn.fetchrow(SQL["lock_lease_session"], lease_id)
        if session is None:
            return None
        row = await conn.fetchrow(SQL["lease_by_id"], lease_id)
        if row is None:
            return None
        return LockedLease(
            session_status=session["status"],
            session_version=session["version"],
            session_dek_version=session["dek_version"],
            now_us=session["now_us"],
            lease=LeaseRow(**dict(row)),
        )

    async def insert_audit(self: Tx, record: AuditRecord) -> None:
        r = record
        try:
            await (await driver(self)).fetchval(
                SQL["insert_audit"], r.at_us, r.action, r.outcome, r.actor_token_id, r.actor_name, r.user_id,
                r.session_id, r.lease_id, r.fencing_token, r.purpose, r.detail, r.request_id, r.source,
                r.subjects, r.mac,
            )  # fmt: skip
        except asyncpg.PostgresError as exc:
            raise AuditUnavailable() from exc

    methods: dict[str, Callable[..., Any]] = {
        "token": token, "peek_session": peek_session, "lock_session": lock_session, "open_lease": open_lease,
        "end_lease": end_lease, "insert_lease": insert_lease, "lock_lease": lock_lease,
        "insert_audit": insert_audit,
    }  # fmt: skip
    for name, method in methods.items():
        setattr(Tx, name, method)


PATCHES: dict[str, Callable[[], None]] = {
    "uvloop": _use_uvloop,
    "inline-deps": _inline_deps,
    "no-access-log": _no_access_log,
    "token-cache": _token_cache,
    "raw-sql": _raw_sql,
}


def main() -> None:
    for name in parse(os.environ.get("SV_WHATIF", "")):
        PATCHES[name]()
    from vault.cli import main as vault_main

    vault_main()


if __name__ == "__main__":
    main()
