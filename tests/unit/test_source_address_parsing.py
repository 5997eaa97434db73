"""What the audit stores as a source address: an IP address in canonical form, or nothing (``None``), never a
value as given. (Through a live vault and its trusted proxies: ``integration/test_source_address.py``.)"""

from __future__ import annotations

import pytest

from vault.service import source_address


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("203.0.113.7", "203.0.113.7"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("", None),
        (None, None),
        ("localhost", None),
        ("203.0.113.7:8080", None),
        ("1.2.3", None),
        ("x" * 200, None),
        (" 127.0.0.1", None),
    ],
)
def test_source_address_accepts_addresses_only(host: str | None, expected: str | None) -> None:
    assert source_address(host) == expected
