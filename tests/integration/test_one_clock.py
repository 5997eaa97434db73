"""One injected wall clock: the Vault passes it to every service, the auditor and the sealer.

Lease decisions are the exception, on purpose: they use the database's clock (every replica must agree).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests._db import RawDb
from tests.sessiongen import make_session
from vault.keys import DekCache, LocalKeyringProvider, load_audit_keys_file
from vault.service import Context, Role, Vault
from vault.settings import Settings
from vault.store import Store

MOMENT = datetime(2027, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
MOMENT_US = (MOMENT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_services_the_auditor_and_the_sealer_read_the_injected_clock(settings: Settings, raw: RawDb) -> None:
    async def run() -> None:
        vault = Vault(
            settings=settings,
            store=Store.connect(settings.require_database_url(), pool_size=2),
            kek=LocalKeyringProvider.from_file(settings.require_keyring_file()),
            dek_cache=DekCache(ttl=60, max_entries=10),
            audit_keys=load_audit_keys_file(settings.require_audit_keys_file()),
            clock=lambda: MOMENT,
        )
        try:
            session, _ = make_session(451, now=MOMENT)  # valid at the injected moment
            result = await vault.sessions.ingest(Context(), session)
            _, info = await vault.tokens.create(Context(), role=Role.AUDITOR, name="clocked")
            sealed = await vault.seal()
            assert info.created_at == MOMENT and result.expires_at is not None
            assert sealed.checkpoint is not None and sealed.checkpoint.at_us == MOMENT_US
        finally:
            await vault.close()

    asyncio.run(run())
    stamps = {at for (at,) in raw.query("SELECT at_us FROM audit_events")}
    assert stamps == {MOMENT_US}  # session.ingest and token.create, dated by the injected clock
