"""Run ``session-vault`` with experimental changes patched in, to measure what they would gain.

For benchmarks only: vault/ is not changed; this module patches the imported code before the CLI runs.
``SV_WHATIF`` names the changes, joined by ``+`` (empty or ``none``: no change)::

    SV_WHATIF=token-cache python -m bench.whatif serve

- ``token-cache``: token authentication (``vault.service.authenticate``, which ``TokenService`` calls)
  answers a token it resolved less than 5 s ago from a per-process cache instead of a database
  transaction (a revoked token would keep working up to 5 s).
- ``pool-reset``: the PostgreSQL pool runs asyncpg's default reset query on every release (``RESET ALL;
  UNLISTEN *; ...``), as the vault did before it skipped it (it keeps no session state): the baseline for
  that change.
- ``no-lane``: the internal app answers the lease routes through FastAPI's router and dependency
  solving, as before vault/api/_lane.py: the baseline for the lean path.

The other changes measured this way in bench/results/whatif.md (uvloop, async dependencies, no access
log, SQL sent straight to asyncpg) have since landed in the vault itself, so their patches are gone.
bench/lease.py runs these side by side with ``--whatif``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

CHANGES = ("token-cache", "pool-reset", "no-lane")
TOKEN_CACHE_SECONDS = 5.0


def parse(spec: str) -> tuple[str, ...]:
    names = tuple(n for n in spec.split("+") if n and n != "none")
    unknown = set(names) - set(CHANGES)
    if unknown:
        raise SystemExit(f"SV_WHATIF: unknown change(s) {sorted(unknown)}; known: {', '.join(CHANGES)}")
    return names


def _token_cache() -> None:
    import vault.service._tokens as tokens  # TokenService.authenticate calls this module's authenticate

    original: Callable[..., Awaitable[Any]] = vars(tokens)["authenticate"]
    cache: dict[tuple[str | None, str], tuple[float, Any]] = {}

    async def authenticate(store: Any, keys: Any, token: str | None, *, role: Any, now: Any) -> Any:
        key = (token, str(role))
        hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < TOKEN_CACHE_SECONDS:
            return hit[1]
        principal = await original(store, keys, token, role=role, now=now)
        cache[key] = (time.monotonic(), principal)
        return principal

    vars(tokens)["authenticate"] = authenticate


def _pool_reset() -> None:
    import vault.store._store as store

    async def default_reset(conn: Any) -> None:
        await conn.reset()

    vars(store)["_no_session_state"] = default_reset


def _no_lane() -> None:
    import vault.api as api  # the CLI calls create_internal_app through vault.api

    original: Callable[..., Any] = api.create_internal_app

    def create_internal_app(settings: Any, *, vault: Any = None, lane: bool = True) -> Any:
        return original(settings, vault=vault, lane=False)

    api.create_internal_app = create_internal_app


PATCHES: dict[str, Callable[[], None]] = {
    "token-cache": _token_cache,
    "pool-reset": _pool_reset,
    "no-lane": _no_lane,
}


def main() -> None:
    for name in parse(os.environ.get("SV_WHATIF", "")):
        PATCHES[name]()
    from vault.cli import main as vault_main

    vault_main()


if __name__ == "__main__":
    main()
