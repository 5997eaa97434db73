"""The audited source address: the TCP peer unless the peer is a configured trusted proxy, and always an
address (a forwarded value that is not one is stored as NULL, never as given). (What counts as an address:
``unit/test_source_address_parsing.py``.)"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests._db import RawDb
from tests._live import LiveVault, live_vault
from vault.settings import Settings


def _bad_token_request(vault: LiveVault, forwarded: str) -> tuple[httpx.Response, str]:
    """An audited request (a bad token: ``auth.failure``) sent from loopback with ``X-Forwarded-For``."""
    request_id = uuid.uuid4().hex
    response = httpx.get(
        f"{vault.internal}/v1/audit/events",
        headers={
            "Authorization": "Bearer not-a-token",
            "X-Forwarded-For": forwarded,
            "X-Request-Id": request_id,
        },
    )
    return response, request_id


def _audited(raw: RawDb, request_id: str) -> list[tuple[str, str, str | None]]:
    rows = raw.query("SELECT action, outcome, source FROM audit_events WHERE request_id = %s", [request_id])
    return [(str(action), str(outcome), source) for action, outcome, source in rows]


def test_a_forwarded_address_from_an_untrusted_peer_is_ignored(vault: LiveVault, raw: RawDb) -> None:
    response, request_id = _bad_token_request(vault, "203.0.113.7")
    assert response.status_code == 401, response.text
    assert _audited(raw, request_id) == [("auth.failure", "unauthenticated", "127.0.0.1")]


def test_an_oversized_forwarded_header_changes_nothing(vault: LiveVault, raw: RawDb) -> None:
    # 200 characters: more than the audit column holds (PostgreSQL refused the row: 503 on every request).
    forwarded = "203.0.113.7" + "x" * 189
    response, request_id = _bad_token_request(vault, forwarded)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert _audited(raw, request_id) == [("auth.failure", "unauthenticated", "127.0.0.1")]


@pytest.fixture
def proxied(settings: Settings) -> Settings:
    return settings.model_copy(update={"trusted_proxies": "127.0.0.1"})


def test_a_trusted_proxy_names_the_source(proxied: Settings, raw: RawDb) -> None:
    with live_vault(proxied) as vault:
        response, request_id = _bad_token_request(vault, "203.0.113.7")
        assert response.status_code == 401, response.text
        assert _audited(raw, request_id) == [("auth.failure", "unauthenticated", "203.0.113.7")]
        # A chain: the nearest untrusted hop is the client.
        response, request_id = _bad_token_request(vault, "192.0.2.9, 203.0.113.8, 127.0.0.1")
        assert response.status_code == 401
        assert _audited(raw, request_id) == [("auth.failure", "unauthenticated", "203.0.113.8")]
        # IPv6, written the long way, is stored in its canonical form.
        response, request_id = _bad_token_request(vault, "[2001:DB8:0:0::1]:443")
        assert response.status_code == 401
        assert _audited(raw, request_id) == [("auth.failure", "unauthenticated", "2001:db8::1")]


@pytest.mark.parametrize("junk", ["not-an-address", "x" * 200, "203.0.113.7; DROP", "unknown"])
def test_junk_from_a_trusted_proxy_is_audited_as_no_source(proxied: Settings, raw: RawDb, junk: str) -> None:
    with live_vault(proxied) as vault:
        response, request_id = _bad_token_request(vault, junk)
        assert response.status_code == 401, response.text
        assert _audited(raw, request_id) == [("auth.failure", "unauthenticated", None)]
