"""A bug under the lean path (vault/api/_lane.py) is the last-resort 500 of the app's guard: a JSON body
with no detail, the exception's type logged and never its text. Through the real internal app, in
process (httpx's ASGI transport), with a stand-in vault whose grant raises."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from vault.api import create_internal_app
from vault.settings import Settings

CANARY = "canary-4f1c-share-bytes"


class _Bug(RuntimeError):
    pass


def _vault(failure: BaseException) -> Any:
    async def authenticate(token: str | None, role: object, ctx: object) -> object:
        return SimpleNamespace(token_id="0123456789abcdef", role=role)

    async def grant(*args: object, **kwargs: object) -> object:
        raise failure

    return SimpleNamespace(
        tokens=SimpleNamespace(authenticate=authenticate), leases=SimpleNamespace(grant=grant)
    )


async def _post(lane: bool, failure: BaseException) -> httpx.Response:
    app = create_internal_app(Settings.model_validate({}), vault=_vault(failure), lane=lane)
    app.state.vault = _vault(failure)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vault") as client:
        return await client.post(
            "/v1/users/alice/lease", json={"purpose": "sign"}, headers={"Authorization": "Bearer x"}
        )


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "fastapi"])
def test_a_bug_under_a_lease_route_is_a_json_500_that_logs_the_type_only(
    lane: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = asyncio.run(_post(lane, _Bug(CANARY)))
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "detail": "internal error"}
    assert CANARY not in response.text
    assert "unhandled error: _Bug" in caplog.text
    assert CANARY not in caplog.text
