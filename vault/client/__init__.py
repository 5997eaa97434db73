"""Client of the vault's internal lease API, for signers: blocking (:class:`VaultClient`) and asyncio
(:class:`AsyncVaultClient`).

    with VaultClient("http://vault.internal:8081", token) as client:
        with client.lease(user_id, purpose="sign", wait=5) as lease:
            refreshed = sign_with(lease.session)
            lease.refreshed = refreshed          # written back on release

Errors are the classes of :mod:`vault.errors` (``LeaseHeld`` with ``retry_after``, ``LeaseLost``,
``NoSession``, ...); an answer with an unknown code is a :class:`ClientError`, a transport failure a
:class:`VaultUnreachable`. The token is in no repr; a lease's session is in no repr.
"""

from __future__ import annotations

from vault.client._async import AsyncLeaseScope, AsyncVaultClient
from vault.client._errors import ClientError, VaultUnreachable
from vault.client._lease import Lease
from vault.client._sync import LeaseScope, VaultClient

__all__ = [
    "AsyncLeaseScope",
    "AsyncVaultClient",
    "ClientError",
    "Lease",
    "LeaseScope",
    "VaultClient",
    "VaultUnreachable",
]
